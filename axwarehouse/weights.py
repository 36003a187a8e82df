"""Method weights too large for a `method_artifacts` cell, as safetensors files inside the warehouse folder.

``method_artifacts.weights_path`` holds the path relative to the warehouse folder, so a warehouse can be moved.
Files are written like Parquet files (temp file in the same folder, fsync, rename) and named by the artifact key,
so a re-run after a crash rewrites the same file rather than leaving a second copy.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from axwarehouse.warehouse_files import partition_slug
from axwarehouse.errors import AxwError

ROOT = "method_weights"


def weights_relpath(method: str, model: str, layer: int, concept_set: str, config_hash: str, concept_id: int) -> str:
    """Relative path of one artifact's weight file (one folder per method/model/layer/concept set/config)."""
    return "/".join([ROOT, f"method={partition_slug(method)}", f"model={partition_slug(model)}", f"layer={layer}",
                     f"concept_set={partition_slug(concept_set)}", config_hash, f"concept_{concept_id}.safetensors"])


def save_weights(warehouse: Path, relpath: str, tensors: dict[str, torch.Tensor],
                 metadata: dict[str, str] | None = None) -> str:
    """Write ``tensors`` atomically to ``warehouse/relpath``; returns ``relpath``."""
    path = Path(warehouse) / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    from safetensors.torch import save_file  # on use: importing this file must not load torch

    save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return relpath


def load_weights(warehouse: Path | None, relpath: str | None) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a weight file; AxwError when it is missing."""
    if not relpath:
        raise AxwError("this artifact has no weight file")
    path = Path(relpath) if Path(relpath).is_absolute() else Path(warehouse or ".") / relpath
    if not path.is_file():
        raise AxwError(f"weight file {path} is missing (re-run `axw train` for this method)")
    from safetensors.torch import load_file, safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = dict(fh.metadata() or {})
    return load_file(str(path)), meta

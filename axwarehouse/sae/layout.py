"""Load and save SAEs in the SAELens and GemmaScope file layouts (local directories only, nothing downloaded).

* SAELens: ``cfg.json`` + ``sae_weights.safetensors`` with ``W_enc [d_in, d_sae]``, ``b_enc [d_sae]``,
  ``W_dec [d_sae, d_in]``, ``b_dec [d_in]`` and, for JumpReLU, ``threshold [d_sae]``. ``cfg.json`` names the
  ``architecture`` ("standard", "jumprelu", "topk"); TopK's k is ``k`` or ``activation_fn_kwargs.k``;
  ``apply_b_dec_to_input`` says whether b_dec is subtracted before encoding.
* GemmaScope: ``params.npz`` with the same five arrays (JumpReLU, no b_dec subtraction), as AxBench reads it.

Encoding follows each architecture: pre = (x − [b_dec]) W_enc + b_enc; JumpReLU: pre·[pre > θ]; ReLU: max(pre, 0);
TopK: ReLU of the k largest pre-activations per token, 0 elsewhere.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from axwarehouse.errors import AxwError

OURS = "ours-topk"  # name of the SAE `axw sae train` writes by default; methods' `sae = "ours"` means it
ARCHITECTURES = ("standard", "relu", "jumprelu", "topk")


@dataclass
class SAE:
    """Weights of one SAE (float32, on CPU unless moved)."""

    W_enc: torch.Tensor  # [d_in, d_sae]
    b_enc: torch.Tensor  # [d_sae]
    W_dec: torch.Tensor  # [d_sae, d_in]
    b_dec: torch.Tensor  # [d_in]
    architecture: str = "jumprelu"
    threshold: torch.Tensor | None = None  # JumpReLU θ [d_sae]
    k: int | None = None  # TopK
    apply_b_dec_to_input: bool = False
    source: str = ""

    @property
    def d_in(self) -> int:
        return self.W_enc.shape[0]

    @property
    def d_sae(self) -> int:
        return self.W_enc.shape[1]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Feature activations [n, d_sae] of residual vectors x [n, d_in]."""
        x = x.to(self.W_enc.dtype)
        if self.apply_b_dec_to_input:
            x = x - self.b_dec
        pre = x @ self.W_enc + self.b_enc
        if self.architecture == "jumprelu":
            return pre * (pre > self.threshold)
        if self.architecture == "topk":
            top = pre.topk(self.k, dim=-1)
            return torch.zeros_like(pre).scatter_(-1, top.indices, torch.relu(top.values))
        return torch.relu(pre)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.W_dec + self.b_dec


def load_sae(folder: str | Path) -> SAE:
    """An SAE from a SAELens or GemmaScope directory; AxwError naming what is missing or inconsistent."""
    folder = Path(folder)
    if not folder.is_dir():
        raise AxwError(f"SAE directory {folder} does not exist")
    if (folder / "cfg.json").is_file() and (folder / "sae_weights.safetensors").is_file():
        cfg = json.loads((folder / "cfg.json").read_text())
        from safetensors.torch import load_file  # on use: importing this file must not load torch

        w = load_file(str(folder / "sae_weights.safetensors"))
        arch = str(cfg.get("architecture", "standard")).lower()
        k = cfg.get("k") or (cfg.get("activation_fn_kwargs") or {}).get("k")
        apply = bool(cfg.get("apply_b_dec_to_input", False))
    elif (folder / "params.npz").is_file():
        npz = np.load(folder / "params.npz")  # numpy arrays only: np.load refuses pickled objects by default
        w = {name: torch.from_numpy(np.asarray(npz[name], dtype=np.float32)) for name in npz.files}
        arch, k, apply = "jumprelu", None, False
    else:
        raise AxwError(f"{folder} is neither a SAELens SAE (cfg.json + sae_weights.safetensors) nor a GemmaScope "
                       "SAE (params.npz)")
    missing = [n for n in ("W_enc", "b_enc", "W_dec", "b_dec") if n not in w]
    if arch not in ARCHITECTURES:
        raise AxwError(f"SAE {folder}: unsupported architecture {arch!r} (supported: {', '.join(ARCHITECTURES)})")
    if arch == "jumprelu" and "threshold" not in w:
        missing.append("threshold")
    if missing:
        raise AxwError(f"SAE {folder} lacks {', '.join(missing)}")
    if arch == "topk" and not k:
        raise AxwError(f"SAE {folder}: a TopK SAE needs k in cfg.json")
    sae = SAE(w["W_enc"].float(), w["b_enc"].float(), w["W_dec"].float(), w["b_dec"].float(), arch,
              w["threshold"].float() if "threshold" in w else None, int(k) if k else None, apply, str(folder))
    if sae.W_dec.shape != (sae.d_sae, sae.d_in) or sae.b_enc.shape != (sae.d_sae,) or sae.b_dec.shape != (sae.d_in,):
        raise AxwError(f"SAE {folder}: inconsistent weight shapes")
    return sae


def save_sae_lens(sae: SAE, folder: str | Path, extra_cfg: dict | None = None) -> Path:
    """Write ``sae`` in the SAELens layout (atomically per file: temp name, then rename)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {"W_enc": sae.W_enc, "b_enc": sae.b_enc, "W_dec": sae.W_dec, "b_dec": sae.b_dec}
    if sae.threshold is not None:
        tensors["threshold"] = sae.threshold
    cfg = {"architecture": sae.architecture, "d_in": sae.d_in, "d_sae": sae.d_sae,
           "apply_b_dec_to_input": sae.apply_b_dec_to_input, **({"k": sae.k} if sae.k else {}),
           **(extra_cfg or {})}
    tmp = folder / ".sae_weights.safetensors.tmp"
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))
    tmp.replace(folder / "sae_weights.safetensors")
    tmp = folder / ".cfg.json.tmp"
    tmp.write_text(json.dumps(cfg, indent=1, sort_keys=True))
    tmp.replace(folder / "cfg.json")  # cfg last: a folder with cfg.json is complete
    return folder


def example_max(sae: SAE, acts: torch.Tensor, example_index: np.ndarray, n_examples: int,
                chunk: int = 4096) -> torch.Tensor:
    """Per-example max [n_examples, d_sae] of every feature over the given token rows (chunked: big SAEs fit)."""
    out = torch.zeros(n_examples, sae.d_sae)
    idx = torch.from_numpy(np.asarray(example_index, dtype=np.int64))
    for start in range(0, len(acts), chunk):
        z = sae.encode(acts[start:start + chunk])
        rows = idx[start:start + chunk].unsqueeze(1).expand_as(z)
        out.scatter_reduce_(0, rows, z, reduce="amax", include_self=True)  # activations are >= 0
    return out


def auroc_columns(scores: torch.Tensor, labels: np.ndarray) -> torch.Tensor:
    """AUROC of every column of ``scores`` [n, f] for binary ``labels`` (average ranks for ties, = sklearn)."""
    from scipy.stats import rankdata

    ranks = torch.from_numpy(rankdata(scores.numpy(), axis=0, method="average"))
    pos = torch.from_numpy(np.asarray(labels) == 1)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    return (ranks[pos].sum(0) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def sae_dir(warehouse: Path, model: str, layer: int, name: str = OURS) -> Path:
    """Folder of a warehouse-trained SAE (SAELens layout)."""
    from axwarehouse.warehouse_files import partition_slug

    return Path(warehouse) / "saes" / f"model={partition_slug(model)}" / f"layer={layer}" / name


def resolve_sae_path(spec: str, warehouse: Path | None, model: str, layer: int) -> Path:
    """``"ours"`` → the default warehouse-trained SAE of (model, layer); anything else is a directory path."""
    if spec == "ours":
        from axwarehouse.model.info import model_info

        return sae_dir(Path(warehouse or "."), model_info(model).name, layer)
    return Path(spec).expanduser().resolve()

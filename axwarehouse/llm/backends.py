"""``--llm BACKEND:MODEL`` → a backend object.

    openai:gpt-4o-mini              OpenAI (key from OPENAI_API_KEY)
    openai-compatible:llama3.1:8b   any chat-completions server at --llm-base-url (vLLM, Ollama, llama.cpp ...)
    embedded:smollm2                SmolLM2-135M-Instruct in process (the offline default)
    embedded:/path/to/hf_dir        any model the target-model loader can load offline
"""

from __future__ import annotations

from dataclasses import dataclass

from axwarehouse.errors import AxwError

BACKENDS = ("openai", "openai-compatible", "embedded")
DEFAULT_LLM = "embedded:smollm2"


@dataclass(frozen=True)
class LLMSpec:
    backend: str
    model: str

    def __str__(self) -> str:
        return f"{self.backend}:{self.model}"


def parse_llm(spec: str) -> LLMSpec:
    """Split ``BACKEND:MODEL`` (the model part may itself contain ':', as Ollama tags do)."""
    backend, sep, model = (spec or "").strip().partition(":")
    if not sep or not model.strip():
        raise AxwError(f"--llm must look like BACKEND:MODEL (backends: {', '.join(BACKENDS)}), got {spec!r}")
    if backend not in BACKENDS:
        raise AxwError(f"unknown LLM backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    return LLMSpec(backend, model.strip())


def make_backend(spec: str | LLMSpec, *, base_url: str | None = None, timeout: float = 60.0,
                 concurrency: int = 8, batch_size: int = 8):
    """Build the backend for ``spec``. Validates everything it can without making a call."""
    from axwarehouse.model.loader import EMBEDDED

    s = parse_llm(spec) if isinstance(spec, str) else spec
    if s.backend == "embedded":
        from axwarehouse.llm.embedded import EmbeddedBackend

        if base_url:
            raise AxwError("--llm-base-url is only for the openai and openai-compatible backends")
        model = f"embedded:{s.model}" if f"embedded:{s.model}" in EMBEDDED else s.model
        return EmbeddedBackend(model, batch_size=batch_size)
    from axwarehouse.llm.openai_backend import OpenAIBackend

    if timeout <= 0:
        raise AxwError("--llm-timeout must be positive")
    return OpenAIBackend(s.model, compatible=s.backend == "openai-compatible", base_url=base_url,
                         timeout=timeout, max_connections=concurrency)

"""Text-LLM backends (openai, openai-compatible, embedded) behind one async client with a response cache.

See ``docs/llm-backends.md``. Typical use inside a stage::

    backend = make_backend("openai:gpt-4o-mini")
    with LLMClient(backend, ResponseCache(cat, run, stage="generate")) as client:
        outcomes = client.run([LLMRequest.user("Say hi", seed=1)])
"""

from axwarehouse.llm.backends import DEFAULT_LLM, LLMSpec, make_backend, parse_llm
from axwarehouse.llm.cache import ResponseCache, request_hash
from axwarehouse.llm.client import LLMClient, Stats, check_answer, default_validator
from axwarehouse.llm.types import Completion, LLMError, LLMRequest, Outcome, TransientLLMError

__all__ = [
    "DEFAULT_LLM", "LLMSpec", "make_backend", "parse_llm", "ResponseCache", "request_hash", "LLMClient", "Stats",
    "check_answer", "default_validator", "Completion", "LLMError", "LLMRequest", "Outcome", "TransientLLMError",
]

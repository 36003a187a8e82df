"""Value types shared by the LLM backends, the response cache and the client.

A :class:`LLMRequest` is everything that defines a response (messages + sampling parameters + seed); the cache key
is a hash of it plus the backend, the model and the attempt number. Credentials are never part of a request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class LLMRequest:
    """One chat-completions call.

    ``purpose`` and ``tag`` label the call for the ledger and for failure reports; they are not part of the cache
    key, so the same prompt asked for two purposes is answered once.
    """

    messages: tuple[tuple[str, str], ...]  # ((role, content), ...): hashable, order-preserving
    temperature: float = 1.0
    max_tokens: int | None = None
    top_p: float | None = None
    seed: int | None = None
    purpose: str = ""
    tag: str = ""

    @classmethod
    def user(cls, content: str, **kw: Any) -> LLMRequest:
        """A single user message, as every AxBench generation call is (no system message)."""
        return cls(messages=(("user", content),), **kw)

    def message_dicts(self) -> list[dict[str, str]]:
        return [{"role": r, "content": c} for r, c in self.messages]

    def params(self) -> dict[str, Any]:
        """Sampling parameters that define the response (None values dropped so defaults hash the same)."""
        raw = {"temperature": self.temperature, "max_tokens": self.max_tokens, "top_p": self.top_p}
        return {k: v for k, v in raw.items() if v is not None}


@dataclass
class Completion:
    """A response from a backend (or from the cache)."""

    text: str | None
    finish_reason: str | None = None  # stop | length | content_filter | ... ; None when malformed
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tokens_estimated: bool = False  # True when the server sent no usage block and we estimated
    latency_s: float = 0.0
    malformed: str | None = None  # set when the HTTP answer was not a usable chat completion
    cached: bool = False


@dataclass
class Outcome:
    """The final result of one logical request after cache look-ups, retries and validation."""

    request: LLMRequest
    value: Any = None  # what the validator extracted (the text by default)
    text: str | None = None
    ok: bool = False
    error: str | None = None  # empty | refused | truncated | malformed | transport: ... | <validator message>
    attempts: int = 0
    calls: int = 0  # network/model calls actually made for this request (cache misses)
    cache_hits: int = 0
    history: list[str] = field(default_factory=list)  # error of each failed attempt, for the failures table


class LLMError(Exception):
    """A call failed for good (bad request, authentication, unknown model): retrying cannot help."""


class TransientLLMError(Exception):
    """A call failed in a way worth retrying (429, 5xx, timeout, connection reset)."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after

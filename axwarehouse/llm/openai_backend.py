"""The ``openai`` and ``openai-compatible`` backends: one async call through the official ``openai`` SDK.

* ``openai``: api.openai.com (or ``--llm-base-url``), key from ``OPENAI_API_KEY``.
* ``openai-compatible``: any server speaking chat completions (vLLM, Ollama, llama.cpp, LM Studio, gateways) at
  ``--llm-base-url``; key from ``AXW_LLM_API_KEY`` if the server wants one. ``OPENAI_API_KEY`` is deliberately
  *not* forwarded there: a researcher's OpenAI key must never reach a third-party URL by accident.

The SDK's own retries are switched off (``max_retries=0``): :class:`~axwarehouse.llm.client.LLMClient` retries
every backend the same way and counts the retries. Errors are mapped to :class:`TransientLLMError` (worth a retry:
429, 408, 409, 5xx, timeouts, connection errors) or :class:`LLMError` (retrying cannot help: 400, 401, 403, 404).
Messages never include the key; ``str()`` of SDK errors carries the server's message only.
"""

from __future__ import annotations

import os
import time
from urllib.parse import urlsplit, urlunsplit

import httpx
import openai

from axwarehouse.errors import AxwError
from axwarehouse.llm.types import Completion, LLMError, LLMRequest, TransientLLMError

OPENAI_KEY_ENV = "OPENAI_API_KEY"
COMPATIBLE_KEY_ENV = "AXW_LLM_API_KEY"


def sanitize_url(url: str | None) -> str | None:
    """scheme://host[:port]/path with user:password@ and ?query (where tokens hide) removed."""
    if not url:
        return None
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))


def _retry_after(exc: openai.APIStatusError) -> float | None:
    try:
        value = exc.response.headers.get("retry-after")
        return float(value) if value is not None else None
    except (AttributeError, ValueError):
        return None


def _short(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]


def estimate_tokens(text: str) -> int:
    """~4 characters per token: used only when a server sends no usage block (flagged in the ledger)."""
    return max(1, (len(text) + 3) // 4) if text else 0


class OpenAIBackend:
    """Chat completions over HTTP with the ``openai`` SDK (AsyncOpenAI)."""

    batched = False

    def __init__(self, model: str, *, compatible: bool = False, base_url: str | None = None,
                 timeout: float = 60.0, max_connections: int = 16):
        self.name = "openai-compatible" if compatible else "openai"
        self.model = model
        if compatible:
            if not base_url:
                raise AxwError("the openai-compatible backend needs --llm-base-url (e.g. http://127.0.0.1:8000/v1)")
            # local servers ignore the key but the SDK requires a non-empty one
            key = os.environ.get(COMPATIBLE_KEY_ENV) or "not-needed"
        else:
            key = os.environ.get(OPENAI_KEY_ENV)
            if not key:
                raise AxwError(f"the openai backend needs {OPENAI_KEY_ENV} in the environment")
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._client = openai.AsyncOpenAI(
            api_key=key, base_url=base_url, max_retries=0, timeout=timeout,
            http_client=openai.DefaultAsyncHttpxClient(limits=limits, timeout=timeout))
        self.endpoint = sanitize_url(str(self._client.base_url))
        self.timeout = timeout

    async def complete(self, req: LLMRequest) -> Completion:
        """One call. Raises TransientLLMError / LLMError; a 200 answer that is not a usable completion comes back
        as a Completion with ``malformed`` set (it is an answer, and it is cached and counted like one)."""
        kwargs = {"model": self.model, "messages": req.message_dicts(), **req.params()}
        if req.seed is not None:
            kwargs["seed"] = req.seed
        t0 = time.perf_counter()
        try:
            resp = await self._client.chat.completions.create(**kwargs)
        except openai.APITimeoutError as exc:
            raise TransientLLMError(f"timeout after {self.timeout:g}s") from exc
        except openai.APIConnectionError as exc:
            raise TransientLLMError(f"connection error: {_short(exc)}") from exc
        except openai.APIStatusError as exc:
            status = exc.status_code
            if status in (408, 409, 429) or status >= 500:
                raise TransientLLMError(f"HTTP {status}", _retry_after(exc)) from exc
            if status in (401, 403):
                raise LLMError(f"{self.name} server rejected the credentials (HTTP {status})") from exc
            raise LLMError(f"{self.name} server refused the request (HTTP {status}: {_short(exc)})") from exc
        except (openai.APIResponseValidationError, ValueError) as exc:
            return Completion(None, None, latency_s=time.perf_counter() - t0, malformed=f"malformed: {_short(exc)}")
        latency = time.perf_counter() - t0
        return self._parse(resp, latency, req)

    def _parse(self, resp: object, latency: float, req: LLMRequest) -> Completion:
        try:
            choice = resp.choices[0]
            text = choice.message.content
            finish = choice.finish_reason
        except (AttributeError, IndexError, TypeError, KeyError):
            return Completion(None, None, latency_s=latency, malformed="malformed: no choices[0].message")
        if text is not None and not isinstance(text, str):
            return Completion(None, finish, latency_s=latency, malformed="malformed: content is not a string")
        usage = getattr(resp, "usage", None)
        pt = getattr(usage, "prompt_tokens", None)
        ct = getattr(usage, "completion_tokens", None)
        if isinstance(pt, int) and isinstance(ct, int):
            return Completion(text, finish, pt, ct, False, latency)
        prompt = estimate_tokens(" ".join(c for _, c in req.messages))
        return Completion(text, finish, prompt, estimate_tokens(text or ""), True, latency)

    async def aclose(self) -> None:
        await self._client.close()

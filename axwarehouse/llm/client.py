"""One async interface over every backend: cache look-up, bounded concurrency, retries, validation, accounting.

Two kinds of retry, kept apart on purpose:

* **transport** (429, 5xx, timeouts, connection errors): the same request again after exponential backoff with
  jitter (or the server's ``Retry-After``), up to ``max_retries`` times. Nothing is cached for a call that never
  got an answer, so a later run tries it again.
* **bad answers** (empty, refused, truncated, malformed — judged by the caller's ``validate``): a *new* draw, up to
  ``max_attempts`` attempts. Attempt n is its own cache entry (the attempt number is part of the key and perturbs
  the seed), so a warm re-run replays the same sequence of answers and makes no call at all.

What stays bad after the last attempt is returned with ``ok=False`` and the error of every attempt; the caller
records it (``generation_failures``) instead of dropping or padding it.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from axwarehouse.errors import AxwError
from axwarehouse.llm.cache import ResponseCache, request_hash
from axwarehouse.llm.prices import cost_usd
from axwarehouse.llm.types import Completion, LLMError, LLMRequest, Outcome, TransientLLMError

Validator = Callable[[Completion], tuple[Any, str | None]]

_REFUSAL = re.compile(
    r"^\W*(i'?m sorry|i am sorry|sorry, (but )?i|i (cannot|can'?t|won'?t|am unable to|'m unable to|"
    r"am not able to) (help|assist|comply|provide|do that|fulfil|fulfill)|as an ai\b)", re.IGNORECASE)


def check_answer(comp: Completion, allow_truncation: bool = False) -> str | None:
    """The generic checks every answer must pass: malformed, empty, refused, truncated. None = fine."""
    if comp.malformed:
        return "malformed"
    if comp.text is None or not comp.text.strip():
        return "empty"
    if _REFUSAL.search(comp.text):
        return "refused"
    if comp.finish_reason == "content_filter":
        return "refused"
    if comp.finish_reason == "length" and not allow_truncation:
        return "truncated"
    return None


def default_validator(comp: Completion) -> tuple[Any, str | None]:
    """Accept any non-empty, non-refused, complete answer; the value is the stripped text."""
    err = check_answer(comp)
    return (None, err) if err else (comp.text.strip(), None)


class Backend(Protocol):
    name: str
    model: str
    endpoint: str | None
    batched: bool

    async def aclose(self) -> None: ...


@dataclass
class Stats:
    """Running totals for progress bars and stage summaries."""

    requests: int = 0
    calls: int = 0
    cache_hits: int = 0
    transport_retries: int = 0
    bad_answers: int = 0  # attempts whose answer failed validation (retried or final)
    failures: int = 0  # requests that stayed bad after every attempt
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    cost_unknown: bool = False
    call_seconds: float = 0.0

    def line(self) -> str:
        cost = "$?" if self.cost_unknown else f"${self.cost_usd:.4f}"
        return (f"calls={self.calls} hits={self.cache_hits} tok={self.prompt_tokens + self.completion_tokens} "
                f"{cost} retries={self.transport_retries} bad={self.bad_answers} failed={self.failures}")


def _attempt_seed(seed: int | None, attempt: int) -> int | None:
    if seed is None or attempt == 0:
        return seed
    return (seed * 1_000_003 + attempt) % 2**31


class LLMClient:
    """Answer lists of :class:`LLMRequest` through ``backend`` with the cache in front.

    ``concurrency`` bounds simultaneous HTTP calls (and the connection pool); embedded backends batch instead.
    ``on_progress(stats)`` is called after every resolved request.
    """

    def __init__(self, backend: Backend, cache: ResponseCache, *, concurrency: int = 8, max_retries: int = 4,
                 max_attempts: int = 3, backoff_s: float = 1.0, max_backoff_s: float = 30.0,
                 on_progress: Callable[[Stats], None] | None = None):
        if concurrency < 1:
            raise AxwError("--llm-concurrency must be at least 1")
        if max_attempts < 1:
            raise AxwError("--max-attempts must be at least 1")
        self.backend = backend
        self.cache = cache
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.on_progress = on_progress
        self.stats = Stats()
        self._runner = asyncio.Runner()

    # -- public ----------------------------------------------------------------------------------------------
    def run(self, requests: Sequence[LLMRequest], validate: Validator = default_validator) -> list[Outcome]:
        """Synchronous wrapper around :meth:`complete_many` (one event loop for the client's lifetime, so the
        HTTP connection pool is reused across calls)."""
        return self._runner.run(self.complete_many(requests, validate))

    def close(self) -> None:
        self._runner.run(self.backend.aclose())
        self._runner.close()

    def __enter__(self) -> LLMClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def key(self, req: LLMRequest, attempt: int = 0) -> str:
        """Cache key of ``req`` at ``attempt`` for this backend and model."""
        return request_hash(self.backend.name, self.backend.model, self._for_attempt(req, attempt), attempt)

    async def complete_many(self, requests: Sequence[LLMRequest],
                            validate: Validator = default_validator) -> list[Outcome]:
        """Outcomes in input order. Raises AxwError when the backend rejects requests outright (auth, 4xx)."""
        outcomes = [Outcome(r) for r in requests]
        self.stats.requests += len(requests)
        pending = list(range(len(requests)))
        for attempt in range(self.max_attempts):
            if not pending:
                break
            sent = {i: self._for_attempt(requests[i], attempt) for i in pending}
            keys = {i: self.key(requests[i], attempt) for i in pending}
            cached = self.cache.get_many(keys.values())
            misses = [i for i in pending if keys[i] not in cached]
            fresh = await self._call(misses, sent)
            still: list[int] = []
            for i in pending:
                out = outcomes[i]
                out.attempts = attempt + 1
                got = fresh.get(i)
                if isinstance(got, Exception):
                    out.error = f"transport: {got}"
                    out.history.append(out.error)
                    self._finish(out, ok=False)
                    continue
                comp = cached[keys[i]] if got is None else got
                value, err = validate(comp)
                if got is not None:
                    self._record(keys[i], sent[i], attempt, comp, err)
                    out.calls += 1
                else:
                    out.cache_hits += 1
                    self.stats.cache_hits += 1
                out.text = comp.text
                if err is None:
                    out.value, out.ok, out.error = value, True, None
                    self._finish(out, ok=True)
                else:
                    out.error = err
                    out.history.append(err)
                    self.stats.bad_answers += 1
                    if attempt + 1 == self.max_attempts:
                        self._finish(out, ok=False)
                    else:
                        still.append(i)
            pending = still
        return outcomes

    # -- internals -------------------------------------------------------------------------------------------
    @staticmethod
    def _for_attempt(req: LLMRequest, attempt: int) -> LLMRequest:
        return replace(req, seed=_attempt_seed(req.seed, attempt)) if attempt else req

    def _finish(self, out: Outcome, ok: bool) -> None:
        if not ok:
            self.stats.failures += 1
        if self.on_progress:
            self.on_progress(self.stats)

    def _record(self, key: str, req: LLMRequest, attempt: int, comp: Completion, err: str | None) -> None:
        cost = cost_usd(self.backend.name, self.backend.model, comp.prompt_tokens, comp.completion_tokens)
        self.stats.calls += 1
        self.stats.prompt_tokens += comp.prompt_tokens
        self.stats.completion_tokens += comp.completion_tokens
        self.stats.call_seconds += comp.latency_s
        if cost is None:
            self.stats.cost_unknown = True
        else:
            self.stats.cost_usd += cost
        self.cache.put(key, self.backend.name, self.backend.model, self.backend.endpoint, req, attempt, comp,
                       ok=err is None, error=err, cost=cost)

    async def _call(self, idx: list[int], sent: dict[int, LLMRequest]) -> dict[int, Completion | Exception]:
        if not idx:
            return {}
        try:
            if self.backend.batched:
                return await self._call_batched(idx, sent)
            sem = asyncio.Semaphore(self.concurrency)
            results = await asyncio.gather(*(self._call_one(sem, sent[i]) for i in idx))
            return dict(zip(idx, results))
        except LLMError as exc:
            raise AxwError(str(exc)) from exc

    async def _call_batched(self, idx: list[int], sent: dict[int, LLMRequest]) -> dict[int, Completion]:
        # same sampling parameters together, similar prompt lengths together: less padding per batch
        order = sorted(idx, key=lambda i: (sent[i].temperature, sent[i].max_tokens or 0, sent[i].top_p or 0,
                                           sum(len(c) for _, c in sent[i].messages)))
        size = max(1, getattr(self.backend, "batch_size", 8))
        out: dict[int, Completion] = {}
        for start in range(0, len(order), size):
            chunk = order[start:start + size]
            comps = await self.backend.complete_batch([sent[i] for i in chunk])
            out.update(zip(chunk, comps))
        return out

    async def _call_one(self, sem: asyncio.Semaphore, req: LLMRequest) -> Completion | Exception:
        last: TransientLLMError | None = None
        for retry in range(self.max_retries + 1):
            if retry:
                self.stats.transport_retries += 1
                delay = last.retry_after if last and last.retry_after is not None else \
                    self.backoff_s * 2 ** (retry - 1) * (0.5 + random.random())
                await asyncio.sleep(min(delay, self.max_backoff_s))
            async with sem:  # held only while a request is on the wire, not while backing off
                try:
                    t0 = time.perf_counter()
                    comp = await self.backend.complete(req)
                    comp.latency_s = comp.latency_s or time.perf_counter() - t0
                    return comp
                except TransientLLMError as exc:
                    last = exc
        return TransientLLMError(f"{last} (gave up after {self.max_retries} retries)")

"""One judge interface for `axw judge` (steered outputs) and `axw judge validate` (labelled texts): a judge object
rates items on criteria, and both commands call the same :meth:`Judge.rate`, so a validation measures exactly the
rating the steering leaderboard uses.

* :class:`LLMJudge` — an LLM with the rubric (openai, openai-compatible, embedded): one cached call per (item,
  criterion), as AxBench asks its judge; the embedded judge's rating slot is read too
  (:func:`axwarehouse.judging.llm_judge.rating_slot`).
* :class:`axwarehouse.judging.proxy.ProxyJudge` — the offline proxy judge (measured, no LLM).

A rating depends only on its item (its text, instruction, concept) and the judge's configuration: never on which
other items are rated with it (the proxy calibrates on data fixed in advance; the LLM judge's request seed is a
function of the item id and criterion).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

from axwarehouse.catalog import Catalog, Run
from axwarehouse.errors import AxwError
from axwarehouse.judging.config import judge_hash
from axwarehouse.judging.llm_judge import CRITERIA, parse_rating, rating_slot


@dataclass(frozen=True)
class Item:
    """What a judge sees: an output (or labelled text) with the instruction it answers and the concept asked for."""

    item_id: str  # steering: output_id; validation: a stable id of the labelled text
    concept_set: str
    concept_id: int
    concept: str
    instruction: str
    output: str
    max_new_tokens: int | None = None  # the output's generation budget, if known (the proxy calibrates at it)


@dataclass
class Rating:
    """One judge rating of one item on one criterion, in judge_scores' terms."""

    item_id: str
    criterion: str
    score: float | None
    score_source: str | None
    raw: str
    parse_ok: bool = True
    parse_error: str | None = None
    expected_score: float | None = None
    request_hash: str | None = None
    transport_error: bool = False  # no answer arrived (no row is written for it; the next run retries)


class Judge(Protocol):
    name: str  # the judge column: BACKEND:MODEL, embedded:NAME or proxy:<model>
    config_hash: str  # what defines a rating besides the item
    rubric: str

    def rate(self, items: Sequence[Item], criteria: Sequence[str]) -> list[Rating]:
        """Ratings of every item on every criterion, item-major, in input order."""
        ...


def check_criteria(criteria: Sequence[str]) -> None:
    bad = [c for c in criteria if c not in CRITERIA]
    if bad:
        raise AxwError(f"unknown judge criterion {bad[0]!r}; choose from {', '.join(CRITERIA)}")


def is_proxy(judge: str) -> bool:
    return judge == "proxy" or judge.startswith("proxy:")


def request_seed(seed: int, item_id: str, criterion: str) -> int:
    """The judge's sampling seed of one rating: a function of the item and criterion only."""
    return int(hashlib.sha256(f"{seed}|{item_id}|{criterion}".encode()).hexdigest()[:8], 16)


@dataclass
class LLMJudge:
    """An LLM judge with a rubric; ``client`` is an open :class:`axwarehouse.llm.LLMClient`."""

    name: str
    config_hash: str
    rubric_obj: object
    client: object
    temperature: float
    max_tokens: int
    seed: int
    cache: object = None  # the ResponseCache the client writes to: flushed after every rate() (answers paid for stay)

    @property
    def rubric(self) -> str:
        return self.rubric_obj.name

    def rate(self, items: Sequence[Item], criteria: Sequence[str]) -> list[Rating]:
        from axwarehouse.llm import LLMRequest

        pairs = [(it, c) for it in items for c in criteria]
        prompts = [self.rubric_obj.prompt(c, it.concept or "", it.instruction or "", it.output or "")
                   for it, c in pairs]
        reqs = [LLMRequest.user(p, temperature=self.temperature, max_tokens=self.max_tokens,
                                seed=request_seed(self.seed, it.item_id, c), purpose=f"judge_{c}", tag=it.item_id)
                for p, (it, c) in zip(prompts, pairs)]
        outcomes = self.client.run(reqs, validate=lambda comp: (comp.text, None))
        ratings = [self._rating(it, c, out, self.client.key(req)) for (it, c), out, req in zip(pairs, outcomes, reqs)]
        if self.name.startswith("embedded:"):
            self._constrain([r for r in ratings if not r.transport_error],
                            [p for p, r in zip(prompts, ratings) if not r.transport_error])
        if self.cache is not None:
            self.cache.flush()
        return ratings

    @staticmethod
    def _rating(item: Item, criterion: str, outcome, key: str) -> Rating:
        if (outcome.error or "").startswith("transport"):
            return Rating(item.item_id, criterion, None, None, outcome.error or "", False, outcome.error,
                          transport_error=True)
        p = parse_rating(outcome.text)
        return Rating(item.item_id, criterion, p.score, "parsed" if p.ok else None, outcome.text, p.ok, p.error,
                      request_hash=key)

    def _constrain(self, ratings: list[Rating], prompts: list[str]) -> None:
        """The embedded judge's rating slot: expected score for all, the constrained digit where parsing failed."""
        from axwarehouse.model.loader import load

        if not ratings:
            return
        lm = load(self.client.backend.model, self.client.backend.dtype)  # the backend's own cached instance
        for r, (k_score, expected) in zip(ratings, rating_slot(lm, prompts, [r.raw for r in ratings])):
            r.expected_score = expected
            if r.score is None and k_score is not None:
                r.score, r.score_source = float(k_score), "constrained"


def llm_judge_name(cfg) -> str:
    """The judge column of an LLM judge spec (embedded names keep their ``embedded:`` prefix)."""
    from axwarehouse.llm import parse_llm

    spec = parse_llm(cfg.judge)
    return f"embedded:{spec.model}" if spec.backend == "embedded" else f"{spec.backend}:{spec.model}"


@contextmanager
def open_llm_judge(cat: Catalog, run: Run, cfg, stage: str = "judge") -> Iterator[LLMJudge]:
    """An :class:`LLMJudge` for ``cfg`` (a JudgeConfig) whose calls are cached in ``llm_calls`` under ``run``."""
    from axwarehouse.llm import LLMClient, ResponseCache, make_backend, parse_llm
    from axwarehouse.model.loader import check_device, load, resolve_dtype

    if not 0 <= cfg.temperature <= 2:
        raise AxwError("--judge-temperature must be between 0 and 2")
    spec = parse_llm(cfg.judge)
    check_device(cfg.device)
    rubric = cfg.rubric()
    backend = make_backend(spec, base_url=cfg.base_url, timeout=cfg.timeout, concurrency=cfg.concurrency,
                           batch_size=cfg.batch_size)
    name = backend.model if backend.model.startswith("embedded:") else f"{spec.backend}:{backend.model}"
    if name.startswith("embedded:"):
        backend.dtype = resolve_dtype(cfg.dtype, cfg.device)
        if cfg.device != "cpu":
            load(backend.model, backend.dtype).model.to(cfg.device)  # the loader's cached instance
    cache = ResponseCache(cat, run, stage=stage)
    try:
        with LLMClient(backend, cache, concurrency=cfg.concurrency, max_attempts=1) as client:
            yield LLMJudge(name, judge_hash(cfg, rubric), rubric, client, cfg.temperature, cfg.max_tokens, cfg.seed,
                           cache)
    finally:
        cache.flush()

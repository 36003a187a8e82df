"""`axw judge validate -c SET --judge J`: rate labelled texts of a concept set with judge J — through
the same :meth:`axwarehouse.judging.rater.Judge.rate` `axw judge` rates steered outputs with — into
`judge_validation`; the views `judge_validity` (per concept) and `judge_validity_macro` (per judge × criterion) turn
them into error rates.

The labelled texts are the set's held-out data (:mod:`axwarehouse.judging.heldout`), per concept:

* concept — its positives (label 1) against its negatives and hard negatives (label 0; kinds ``negative`` and
  ``hard_negative``, reported apart);
* instruction — each positive under its own instruction (1, ``own``) and under the instruction of the positive at
  the same rank of the next concept of the set (0, ``other``);
* fluency — each positive as written (1, ``as_written``), its words shuffled (0, ``shuffled``) and collapsed into a
  loop half-way (0, ``looped``), with the proxy judge's own negative makers.

All ratings are computed before any row is written, and written as one file: a judge that fails part-way (a
backend error, an interrupt) leaves no `judge_validation` rows (the LLM answers it paid for stay cached in
`llm_calls`, so the re-run does not pay again). Incremental by (judge, judge config, concept set): a validated
judge is not rated again.
"""

from __future__ import annotations

import random
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import pyarrow as pa

from axwarehouse.catalog import Catalog, Run
from axwarehouse.errors import AxwError
from axwarehouse.judging.config import JudgeConfig, judge_hash
from axwarehouse.judging.heldout import heldout_rows
from axwarehouse.judging.proxy import PROXY, ProxyJudge, proxy_hash
from axwarehouse.judging.rater import Item, Rating, check_criteria, is_proxy, llm_judge_name, open_llm_judge
from axwarehouse.progress import Progress
from axwarehouse.judging import proxy_measures as pj
from axwarehouse.judging.llm_judge import CRITERIA

PROMPT_TOKENS_PER_CHAR = 0.25  # dry-run token estimate (≈ 4 characters per token, as `axw generate --dry-run`)


@dataclass(frozen=True)
class Labelled:
    """One labelled rating to make: the item, the criterion, the truth (1 = present/relevant/fluent) and its kind."""

    item: Item
    criterion: str
    label: int
    kind: str
    split: str
    example_id: int


@dataclass
class ValidateResult:
    judge: str = ""
    concept_set: str = ""
    rated: int = 0
    skipped: int = 0
    failed: int = 0  # ratings without a score (an LLM answer without a valid rating): counted as 0 by the views
    seconds: float = 0.0
    dry_run: str = ""
    by_criterion: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        if self.dry_run:
            return self.dry_run
        if not self.rated:
            return (f"judge validate {self.judge} on {self.concept_set}: all {self.skipped} ratings present, "
                    "nothing to do (`axw leaderboard judges` shows them)")
        crit = ", ".join(f"{c} {n}" for c, n in sorted(self.by_criterion.items()))
        return (f"judge validate {self.judge} on {self.concept_set}: {self.rated} ratings ({crit}) in "
                f"{self.seconds:.1f}s; {self.failed} without a valid rating (counted as 0); see "
                "`axw leaderboard judges`")


def labelled_items(cat: Catalog, concept_set: str, seed: int = 42) -> list[Labelled]:
    """Every labelled rating of the set's held-out texts (see module doc), in a fixed order."""
    rows = heldout_rows(cat, concept_set)
    names = dict(cat.sql("SELECT concept_id, concept FROM concepts WHERE concept_set = ?", [concept_set]).fetchall())
    concepts = sorted(c for c in {r[2] for r in rows if r[3] == "positive"} if c >= 0)
    pos = {c: [r for r in rows if r[2] == c and r[3] == "positive"] for c in concepts}
    out: list[Labelled] = []
    for k, c in enumerate(concepts):
        # shared negatives (owner -1: a train-only set's held-out slice) are absent texts for every concept
        out += _concept_items(concept_set, c, names.get(c, ""), [r for r in rows if r[2] in (c, -1)])
        out += _instruction_items(concept_set, c, names.get(c, ""), pos[c], pos[concepts[(k + 1) % len(concepts)]])
        out += _fluency_items(concept_set, c, names.get(c, ""), pos[c], seed)
    return out


def _item(concept_set: str, c: int, name: str, row: tuple, variant: str, instruction: str, text: str) -> Item:
    return Item(f"{concept_set}/{row[0]}/{row[1]}/{c}/{variant}", concept_set, c, name, instruction or "", text or "")


def _concept_items(concept_set: str, c: int, name: str, rows: list[tuple]) -> list[Labelled]:
    label = {"positive": 1, "negative": 0, "hard_negative": 0}
    return [Labelled(_item(concept_set, c, name, r, "text", r[4], r[5]), "concept", label[r[3]], r[3], r[0], r[1])
            for r in rows if r[3] in label]


def _instruction_items(concept_set: str, c: int, name: str, own: list[tuple], other: list[tuple]) -> list[Labelled]:
    if other is own:
        raise AxwError(f"concept set {concept_set!r}: instruction validation needs positives of at least 2 concepts")
    out = []
    for k, r in enumerate(own):
        o = other[k % len(other)]
        out.append(Labelled(_item(concept_set, c, name, r, "text", r[4], r[5]), "instruction", 1, "own", r[0], r[1]))
        out.append(Labelled(_item(concept_set, c, name, r, f"instruction-of-{o[1]}", o[4], r[5]), "instruction", 0,
                            "other", r[0], r[1]))
    return out


def _fluency_items(concept_set: str, c: int, name: str, own: list[tuple], seed: int) -> list[Labelled]:
    out = []
    for r in own:
        rng = random.Random(f"{seed}|{concept_set}|{r[0]}|{r[1]}")  # per text: independent of the set's other texts
        out.append(Labelled(_item(concept_set, c, name, r, "text", r[4], r[5]), "fluency", 1, "as_written", r[0],
                            r[1]))
        for kind, text in (("shuffled", pj.shuffle_words(r[5], rng)), ("looped", pj.half_loop(r[5], rng))):
            out.append(Labelled(_item(concept_set, c, name, r, kind, r[4], text), "fluency", 0, kind, r[0], r[1]))
    return out


def validated_keys(cat: Catalog, judge: str, jhash: str, concept_set: str) -> set[tuple[str, str]]:
    if not cat.table_files("judge_validation"):
        return set()
    return set(cat.sql("SELECT item_id, criterion FROM judge_validation WHERE judge = ? AND judge_config_hash = ? "
                       "AND concept_set = ?", [judge, jhash, concept_set]).fetchall())


def judge_identity(cfg: JudgeConfig, model: str) -> tuple[str, str]:
    """(judge column, judge config hash) of ``cfg`` without loading anything."""
    from axwarehouse.model.loader import resolve_dtype

    if is_proxy(cfg.judge):
        name = cfg.judge if cfg.judge != PROXY else f"{PROXY}:{model}"
        return name, proxy_hash(cfg.seed, resolve_dtype(cfg.dtype, cfg.device))
    return llm_judge_name(cfg), judge_hash(cfg, cfg.rubric())


def estimate(cfg: JudgeConfig, judge: str, todo: list[Labelled], skipped: int) -> str:
    """Dry run: how many ratings (= LLM calls for an LLM judge) and their cost at the ledger's prices."""
    from axwarehouse.llm import parse_llm
    from axwarehouse.llm.prices import price_for
    from axwarehouse.judging.llm_judge import PROMPTS

    head = f"dry run: judge validate {judge}: {len(todo)} ratings to make, {skipped} already present"
    if is_proxy(cfg.judge):
        return head + "; no LLM calls (the proxy judge measures; cost $0)"
    spec = parse_llm(cfg.judge)
    price = price_for(spec.backend, spec.model)
    chars = sum(len(PROMPTS[x.criterion]) + len(x.item.output) + len(x.item.instruction) + len(x.item.concept)
                for x in todo)
    pin, pout = int(chars * PROMPT_TOKENS_PER_CHAR), len(todo) * cfg.max_tokens
    cost = "unknown (no price for this model)" if price is None else f"${(pin * price[0] + pout * price[1]) / 1e6:.4f}"
    return (f"{head}\n{len(todo)} LLM calls to {judge}, ~{pin:,} prompt tokens, ≤ {pout:,} completion tokens "
            f"(--judge-max-tokens {cfg.max_tokens}); estimated cost ≤ {cost}; answers already in llm_calls are free")


def run_validate(cat: Catalog, cfg: JudgeConfig, model: str, dry_run: bool = False,
                 progress: bool = True) -> ValidateResult:
    """Rate the set's labelled texts with ``cfg.judge`` (proxy judges measure with ``model``) into
    `judge_validation`, all or nothing."""
    if not cfg.concept_set:
        raise AxwError("--concept-set is required")
    check_criteria(cfg.criteria)
    judge, jhash = judge_identity(cfg, model)
    labelled = [x for x in labelled_items(cat, cfg.concept_set, cfg.seed) if x.criterion in cfg.criteria]
    done = validated_keys(cat, judge, jhash, cfg.concept_set)
    todo = [x for x in labelled if (x.item.item_id, x.criterion) not in done]
    result = ValidateResult(judge=judge, concept_set=cfg.concept_set, skipped=len(labelled) - len(todo))
    if dry_run:
        result.dry_run = estimate(cfg, judge, todo, result.skipped)
        return result
    if not todo:
        return result
    started = time.perf_counter()
    config = {"judge": judge, "judge_config_hash": jhash, "concept_set": cfg.concept_set,
              "criteria": list(cfg.criteria), "validate": True}
    with cat.run("judge_validate", config) as run, open_judge(cat, run, cfg, model) as jdg:
        ratings = rate_labelled(jdg, todo, cfg.chunk, progress)
        failed = [r for r in ratings if r.transport_error]
        if failed:
            raise AxwError(f"judge {judge}: {len(failed)} of {len(ratings)} ratings got no answer ({failed[0].raw}); "
                           "no judge_validation rows written, re-run to retry (answers received are cached)")
        write_validation(run, jdg, todo, ratings)
    result.rated = len(ratings)
    result.failed = sum(r.score is None for r in ratings)
    for x in todo:
        result.by_criterion[x.criterion] = result.by_criterion.get(x.criterion, 0) + 1
    result.seconds = time.perf_counter() - started
    return result


@contextmanager
def open_judge(cat: Catalog, run: Run, cfg: JudgeConfig, model: str):
    """The judge object `axw judge` would rate with (proxy or LLM)."""
    if is_proxy(cfg.judge):
        from axwarehouse.model.loader import check_device, resolve_dtype

        check_device(cfg.device)
        target = model if cfg.judge == PROXY else cfg.judge[len(PROXY) + 1:]
        yield ProxyJudge(cat, run, cfg, target, proxy_hash(cfg.seed, resolve_dtype(cfg.dtype, cfg.device)))
        return
    with open_llm_judge(cat, run, cfg, stage="judge_validate") as llm:
        yield llm


def rate_labelled(judge, todo: list[Labelled], chunk: int, progress: bool) -> list[Rating]:
    """Ratings of ``todo`` in order: per criterion, batches of items through ``judge.rate``."""
    got: dict[tuple[str, str], Rating] = {}
    with Progress(len(todo), "judge validate", "rating", enabled=progress) as bar:
        for crit in CRITERIA:
            mine = [x for x in todo if x.criterion == crit]
            for start in range(0, len(mine), chunk):
                for r in judge.rate([x.item for x in mine[start:start + chunk]], [crit]):
                    got[(r.item_id, r.criterion)] = r
                bar.update(len(mine[start:start + chunk]))
    return [got[(x.item.item_id, x.criterion)] for x in todo]


def write_validation(run: Run, judge, todo: list[Labelled], ratings: list[Rating]) -> None:
    """All rows in one write (one file: `judge_validation` is not partitioned)."""
    n = len(todo)
    run.write("judge_validation", pa.table({
        "judge": [judge.name] * n, "judge_config_hash": [judge.config_hash] * n, "rubric": [judge.rubric] * n,
        "concept_set": [x.item.concept_set for x in todo], "concept_id": pa.array([x.item.concept_id for x in todo],
                                                                                  pa.int64()),
        "criterion": [x.criterion for x in todo], "item_id": [x.item.item_id for x in todo],
        "split": [x.split for x in todo], "example_id": pa.array([x.example_id for x in todo], pa.int64()),
        "kind": [x.kind for x in todo], "label": pa.array([x.label for x in todo], pa.int8()),
        "rating": pa.array([r.score for r in ratings], pa.float64()),
        "score_source": pa.array([r.score_source for r in ratings], pa.string()),
        "instruction": [x.item.instruction for x in todo], "text": [x.item.output for x in todo],
        "raw": [r.raw for r in ratings], "config_hash": [judge.config_hash] * n}))

"""`axw judge`: rate every steered generation on concept, instruction relevance and fluency (0–2) with an LLM
judge into `judge_scores`, and its perplexity under the unsteered target model into `output_perplexity`.

* Calls go through the cached LLM client (`llm_calls`): a re-run, or a second judge run over the same outputs,
  asks nothing again. One attempt per rating (as AxBench): a bad answer is recorded, not redrawn. Transport
  failures write no row, so the next run retries them.
* Unparseable answers keep the reason and the raw text; the table stores no score for them (NULL) and the steering
  views apply the rule: scored 0 as AxBench does (default), or left out (``--judge-failures drop``). The embedded
  judge's rating slot is decoded under constraint instead (``score_source = 'constrained'``, see
  :mod:`axwarehouse.judging.llm_judge`), which also gives every embedded rating an expected score Σ p(k)·k.
* The rubric is ours by default; ``--rubric-from PATH`` reads AxBench's own templates from a checkout
  (:mod:`axwarehouse.judging.rubric`). Each row names its rubric; ``judge_configs`` records the settings.
* Incremental by (output_id, judge, criterion, config_hash); config_hash = the rubric's templates (and its name
  when not ours), temperature, max tokens and seed. Work is written in chunks, each one atomic file (plus the
  cache rows it paid for).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pyarrow as pa

from axwarehouse.catalog import Catalog, Run
from axwarehouse.errors import AxwError
from axwarehouse.judging.config import JudgeConfig, JudgeResult, judge_hash
from axwarehouse.judging.perplexity import missing_perplexity, write_perplexity
from axwarehouse.judging.rater import Item, LLMJudge, Rating, check_criteria, is_proxy, llm_judge_name, open_llm_judge
from axwarehouse.judging.selection import pending_ratings
from axwarehouse.model.loader import check_device, resolve_dtype
from axwarehouse.progress import Progress
from axwarehouse.stage_runner import Work, run_work, shardable
from axwarehouse.judging.rubric import Rubric

def _shard_check(cfg: JudgeConfig) -> None:
    if not cfg.concept_set:
        raise AxwError("judge on Ray shards a concept set's outputs: give -c/--concept-set")
    if not cfg.judge.startswith("embedded"):
        raise AxwError("judge on Ray runs the embedded judge; an HTTP judge already runs concurrently "
                       "(--judge-concurrency)")


@shardable(check=_shard_check)
def run_judge(cat: Catalog, cfg: JudgeConfig, progress: bool = True) -> JudgeResult:
    """Rate every output of the selection that has no rating by this judge and config yet; then perplexities."""
    from axwarehouse.heap import reuse_large_buffers
    from axwarehouse.llm import parse_llm

    reuse_large_buffers()  # the judge's model runs: its large temporaries reuse heap memory (axwarehouse/heap.py)

    if is_proxy(cfg.judge):
        from axwarehouse.stages.judge_proxy import run_proxy_judge

        return run_proxy_judge(cat, cfg, progress)
    check_criteria(cfg.criteria)
    if not 0 <= cfg.temperature <= 2:
        raise AxwError("--judge-temperature must be between 0 and 2")
    parse_llm(cfg.judge)
    check_device(cfg.device)
    resolve_dtype(cfg.dtype, cfg.device)
    if cat.count("steering_outputs") == 0:
        raise AxwError("no steering outputs to judge (run `axw steer` first)")
    rubric = cfg.rubric()
    jhash = judge_hash(cfg, rubric)
    judge = llm_judge_name(cfg)
    result = JudgeResult(judge=judge, rubric=rubric.name)
    todo, result.skipped = pending_ratings(cat, cfg, judge, jhash)
    config = {"judge": judge, "judge_config_hash": jhash, "concept_set": cfg.concept_set,
              "methods": list(cfg.methods), "criteria": list(cfg.criteria), "rubric": rubric.name,
              "temperature": cfg.temperature, "max_tokens": cfg.max_tokens, "seed": cfg.seed}
    if not todo and not (cfg.perplexity and missing_perplexity(cat, cfg)):
        return result
    started = time.perf_counter()
    with cat.run("judge", config) as run:
        if todo:
            _write_config(run, judge, jhash, rubric, cfg)
            with open_llm_judge(cat, run, cfg) as llm:
                _rate_outputs(run, llm, cfg, todo, result, progress)
        if cfg.perplexity:
            result.perplexities = write_perplexity(cat, run, cfg)
    result.seconds = time.perf_counter() - started
    return result


def _write_config(run: Run, judge: str, jhash: str, rubric: Rubric, cfg: JudgeConfig) -> None:
    run.write("judge_configs", pa.table({
        "judge": [judge], "judge_config_hash": [jhash], "rubric": [rubric.name],
        "rubric_source": pa.array([rubric.source], pa.string()),
        "temperature": pa.array([cfg.temperature], pa.float64()),
        "max_tokens": pa.array([cfg.max_tokens], pa.int32()), "seed": pa.array([cfg.seed], pa.int64())}))


def output_batches(todo: list[tuple], chunk: int) -> Iterator[tuple[list[Item], tuple[str, ...]]]:
    """(items, criteria) batches of about ``chunk`` ratings from pending (output_id, criterion, concept, instruction,
    generation) rows: the outputs missing the same criteria go together."""
    missing: dict[str, list[str]] = {}
    item: dict[str, Item] = {}
    for oid, crit, concept, instr, gen in todo:
        missing.setdefault(oid, []).append(crit)
        item[oid] = Item(oid, "", 0, concept or "", instr or "", gen or "")
    groups: dict[tuple[str, ...], list[Item]] = {}
    for oid, crits in missing.items():
        groups.setdefault(tuple(crits), []).append(item[oid])
    for crits, items in groups.items():
        per = max(1, chunk // len(crits))
        for start in range(0, len(items), per):
            yield items[start:start + per], crits


def _rate_outputs(run: Run, llm: LLMJudge, cfg: JudgeConfig, todo: list[tuple], result: JudgeResult,
                  progress: bool) -> None:
    """Rate ``todo`` in batches through the stage runner: each batch's rows one atomic file, written as it ends
    (an interrupted run keeps what it rated; its LLM answers are cached either way)."""

    def rate(batch: tuple[list[Item], tuple[str, ...]], _inputs: None) -> pa.Table | None:
        return score_rows(llm.name, llm.config_hash, llm.rubric, llm.rate(*batch), result)

    work = Work("judge_scores", list(output_batches(todo, cfg.chunk)), compute=rate,
                weight=lambda batch: len(batch[0]) * len(batch[1]), flush_rows=1, status=llm.client.stats.line)
    try:
        with Progress(len(todo), "judge", "rating", enabled=progress) as bar:
            run_work(run, work, bar)
    finally:
        result.calls, result.cache_hits = llm.client.stats.calls, llm.client.stats.cache_hits


def score_rows(judge: str, jhash: str, rubric: str, ratings: list[Rating], result: JudgeResult) -> pa.Table | None:
    """`judge_scores` rows of the ratings that got an answer (a transport failure gets none: retried next run),
    counted into ``result``."""
    keep = [r for r in ratings if not r.transport_error]
    result.transport_failures += len(ratings) - len(keep)
    if not keep:
        return None
    for r in keep:
        if not r.parse_ok:
            result.parse_failures[r.parse_error] = result.parse_failures.get(r.parse_error, 0) + 1
    result.rated += len(keep)
    result.expected += sum(r.expected_score is not None for r in keep)
    result.constrained += sum(r.score_source == "constrained" for r in keep)
    result.failed += sum(r.score is None for r in keep)
    return pa.table({
        "output_id": [r.item_id for r in keep], "judge": [judge] * len(keep), "criterion": [r.criterion for r in keep],
        "score": pa.array([r.score for r in keep], pa.float64()),
        "score_source": pa.array([r.score_source for r in keep], pa.string()),
        "expected_score": pa.array([r.expected_score for r in keep], pa.float64()),
        "parse_ok": [r.parse_ok for r in keep], "parse_error": pa.array([r.parse_error for r in keep], pa.string()),
        "raw": [r.raw for r in keep], "request_hash": pa.array([r.request_hash for r in keep], pa.string()),
        "rubric": [rubric] * len(keep), "config_hash": [jhash] * len(keep)})

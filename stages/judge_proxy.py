"""`axw judge --judge proxy` (the offline default): rate steered outputs with the proxy judge of
:mod:`axwarehouse.judging.proxy` into `judge_scores`, its thresholds into `judge_calibration`.

* One judge per target model: ``judge = 'proxy:<model>'`` (the unsteered model of the outputs measures
  instruction relevance and fluency), ``score_source = 'proxy'``, ``parse_ok = true``, ``rubric = 'proxy-v3'``,
  ``raw`` = JSON of the measurement, its calibration id and thresholds (fluency: both of its measurements, the
  perplexity's and the repetition veto's, each with its calibration id and thresholds).
* Concept calibration per concept (its classifier is refitted deterministically each run: cheap, and no model
  file to store); instruction/fluency calibration per (model, output token budget) on the held-out calibration
  instructions steering never draws (axwarehouse/steering/instructions.py): the unsteered answers are generated
  once, and a later run reuses the stored thresholds of the same calibration id. No calibration depends on which
  outputs are rated, so an output's rating does not either.
* Rating goes through :class:`axwarehouse.judging.proxy.ProxyJudge` (the judge interface of
  :mod:`axwarehouse.judging.rater`), as `axw judge validate` rates its labelled texts.
* Incremental by (output_id, judge, criterion, config_hash) like the LLM judge; ratings are written in chunks,
  each an atomic file, so an interrupted run resumes without duplicates.
"""

from __future__ import annotations

import time

import pyarrow as pa

from axwarehouse.catalog import Catalog, Run
from axwarehouse.errors import AxwError
from axwarehouse.judging.config import JudgeConfig, JudgeResult
from axwarehouse.judging.perplexity import missing_perplexity, write_measured_perplexity, write_perplexity
from axwarehouse.judging.proxy import PROXY, ProxyJudge, proxy_hash
from axwarehouse.judging.rater import Item, Rating, check_criteria
from axwarehouse.judging.selection import output_filter
from axwarehouse.progress import Progress
from axwarehouse.judging import proxy_measures as pj


def run_proxy_judge(cat: Catalog, cfg: JudgeConfig, progress: bool = True) -> ProxyJudgeResult:
    """Rate every selected output lacking a proxy rating (per target model), then perplexities."""
    from axwarehouse.model.loader import check_device, resolve_dtype

    check_criteria(cfg.criteria)
    check_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, cfg.device)
    if cat.count("steering_outputs") == 0:
        raise AxwError("no steering outputs to judge (run `axw steer` first)")
    jhash = proxy_hash(cfg.seed, dtype)
    outputs = _outputs(cat, cfg)
    models = sorted({r[1] for r in outputs})
    result = ProxyJudgeResult(judge=", ".join(f"{PROXY}:{m}" for m in models) or PROXY)
    done = {(oid, judge, crit) for oid, judge, crit in cat.sql(
        "SELECT output_id, judge, criterion FROM judge_scores WHERE config_hash = ? AND judge LIKE 'proxy:%'",
        [jhash]).fetchall()}
    todo = {m: [r for r in outputs if r[1] == m
                and any((r[0], f"{PROXY}:{m}", c) not in done for c in cfg.criteria)] for m in models}
    result.skipped = sum(1 for r in outputs for c in cfg.criteria if (r[0], f"{PROXY}:{r[1]}", c) in done)
    if not any(todo.values()) and not (cfg.perplexity and missing_perplexity(cat, cfg)):
        return result
    started = time.perf_counter()
    config = {"judge": PROXY, "judge_config_hash": jhash, "concept_set": cfg.concept_set,
              "methods": list(cfg.methods), "criteria": list(cfg.criteria)}
    with cat.run("judge", config) as run:
        for model in models:
            if todo[model]:
                _rate_model(cat, run, cfg, jhash, model, todo[model], done, result, progress)
        if cfg.perplexity:
            result.perplexities = write_perplexity(cat, run, cfg)
    result.seconds = time.perf_counter() - started
    return result


def _outputs(cat: Catalog, cfg: JudgeConfig) -> list[tuple]:
    """(output_id, model, concept_set, concept_id, instruction_set, instruction_id, instruction, generation,
    concept, token budget) of the covered outputs the judge measures, by model."""
    where, params = output_filter(cfg)
    outputs = cat.sql(f"""SELECT o.output_id, o.model, o.concept_set, o.concept_id, o.instruction_set,
                                 o.instruction_id, o.instruction, o.generation, c.concept,
                                 TRY_CAST(json_extract(r.config, '$.max_new_tokens') AS INTEGER) AS budget
                          FROM steering_outputs o
                          LEFT JOIN concepts c ON c.concept_set = o.concept_set AND c.concept_id = o.concept_id
                          LEFT JOIN runs r ON r.run_id = o.run_id
                          WHERE {where} ORDER BY o.model, o.output_id""", params).fetchall()
    if cfg.judge != PROXY:  # proxy:<model>: only the outputs of that target model (as `axw status` suggests)
        outputs = [r for r in outputs if f"{PROXY}:{r[1]}" == cfg.judge]
        if not outputs:
            raise AxwError(f"no steering outputs of model {cfg.judge[len(PROXY) + 1:]!r} to judge with {cfg.judge} "
                           "(--judge proxy measures every output with its own model)")
    return outputs


def _rate_model(cat: Catalog, run: Run, cfg: JudgeConfig, jhash: str, model: str, todo: list[tuple], done: set, result,
                progress: bool) -> None:
    judge = ProxyJudge(cat, run, cfg, model, jhash, progress)
    # log p(output | instruction) is the conditional perplexity `axw judge` reports: write it from this pass
    need_ppl = {r[0] for r in missing_perplexity(cat, cfg) if r[1] == model} if cfg.perplexity else set()
    measured = bool({"instruction", "fluency"} & set(cfg.criteria))
    with Progress(len(todo), "proxy judge", "output", enabled=progress) as bar:
        for start in range(0, len(todo), cfg.chunk):
            chunk = todo[start:start + cfg.chunk]
            items = [Item(r[0], r[2], r[3], r[8] or "", r[6] or "", r[7] or "", r[9]) for r in chunk]
            ratings = [x for x in judge.rate(items, cfg.criteria) if (x.item_id, judge.name, x.criterion) not in done]
            _write_ratings(run, judge.name, jhash, ratings)
            if measured:
                write_measured_perplexity(run, model, [(r[0], judge.measures[r[0]].logp_given_instruction,
                                                        judge.measures[r[0]].n_tokens)
                                                       for r in chunk if r[0] in need_ppl])
            result.rated += len(ratings)
            bar.update(len(chunk))


def _write_ratings(run: Run, judge: str, jhash: str, rows: list[Rating]) -> None:
    if not rows:
        return
    n = len(rows)
    run.write("judge_scores", pa.table({
        "output_id": [r.item_id for r in rows], "judge": [judge] * n, "criterion": [r.criterion for r in rows],
        "score": pa.array([r.score for r in rows], pa.float64()), "score_source": [PROXY] * n,
        "expected_score": pa.array([None] * n, pa.float64()), "parse_ok": [True] * n,
        "parse_error": pa.array([None] * n, pa.string()), "raw": [r.raw for r in rows],
        # `rubric` is the judge_scores column the LLM-judge change adds; until that schema is in, the catalog drops
        # it (the raw JSON carries the rubric too)
        "request_hash": pa.array([None] * n, pa.string()), "rubric": [pj.RUBRIC] * n,
        "config_hash": [jhash] * n}))


class ProxyJudgeResult(JudgeResult):
    """What a proxy run did (no LLM calls, so no parse or cache figures)."""

    def summary(self) -> str:
        if not self.rated and not self.perplexities:
            return f"judge {self.judge}: all {self.skipped} ratings present, nothing to do"
        line = (f"judge {self.judge}: {self.rated} ratings in {self.seconds:.1f}s (measured: concept classifier, "
                f"PMI, perplexity, repetition), {self.skipped} already present")
        return line + (f"\nperplexity: {self.perplexities} outputs" if self.perplexities else "")

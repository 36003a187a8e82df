"""`axw judge --judge proxy` (the offline default): rate steered outputs with the proxy judge of
:mod:`axwarehouse.steering.proxy_judge` into `judge_scores`, its thresholds into `judge_calibration`.

* One judge per target model: ``judge = 'proxy:<model>'`` (the unsteered model of the outputs measures
  instruction relevance and fluency), ``score_source = 'proxy'``, ``parse_ok = true``, ``rubric = 'proxy-v3'``,
  ``raw`` = JSON of the measurement, its calibration id and thresholds (fluency: both of its measurements, the
  perplexity's and the repetition veto's, each with its calibration id and thresholds).
* Concept calibration per concept (its classifier is refitted deterministically each run: cheap, and no model
  file to store); instruction/fluency calibration per (model, instruction set, calibration instructions): the
  unsteered answers are generated once, and a later run reuses the stored thresholds of the same calibration id.
* Incremental by (output_id, judge, criterion, config_hash) like the LLM judge; ratings are written in chunks,
  each an atomic file, so an interrupted run resumes without duplicates.
"""

from __future__ import annotations

import json
import math
import random
import sys
import time

import pyarrow as pa

from axwarehouse.catalog import Catalog, Run
from axwarehouse.errors import AxwError
from axwarehouse.lineage import config_hash
from axwarehouse.steering import proxy_judge as pj
from stages.judge import JudgeResult, _filters, _missing_perplexity, _perplexity

PROXY = "proxy"
MAX_CALIBRATION_INSTRUCTIONS = 64  # bounds the reference generation for large concept sets
OTHER_POSITIVES_PER_POSITIVE = 4  # cap on other concepts' positives used as concept negatives


def proxy_hash(seed: int, dtype: str = "float32") -> str:
    """What defines a proxy rating besides the output and its calibration data (the measuring model's dtype
    included: a bfloat16 log-probability is another measurement than a float32 one)."""
    return config_hash({"rubric": pj.RUBRIC, **({} if dtype == "float32" else {"dtype": dtype}),
                        "neg_q": pj.NEG_QUANTILE, "pos_q": pj.POS_QUANTILE,
                        "folds": pj.CV_FOLDS, "n_mismatched": pj.N_MISMATCHED, "seed": seed,
                        "repetition": f"{pj.REPETITION_MEASURE}-veto-half_loop-{pj.LOOP_MAX_PHRASE_WORDS}",
                        "classifier": f"{pj.CONCEPT_FEATURES_NAME}+logreg-liblinear-C10-balanced",
                        "max_calibration_instructions": MAX_CALIBRATION_INSTRUCTIONS,
                        "other_positives_per_positive": OTHER_POSITIVES_PER_POSITIVE})


def run_proxy_judge(cat: Catalog, cfg, progress: bool = True):
    """Rate every selected output lacking a proxy rating (per target model), then perplexities (cfg: JudgeConfig)."""
    from axwarehouse.lm.loader import check_device, resolve_dtype

    bad = [c for c in cfg.criteria if c not in ("concept", "instruction", "fluency")]
    if bad:
        raise AxwError(f"unknown judge criterion {bad[0]!r}; choose from concept, instruction, fluency")
    check_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, cfg.device)
    if cat.count("steering_outputs") == 0:
        raise AxwError("no steering outputs to judge (run `axw steer` first)")
    jhash = proxy_hash(cfg.seed, dtype)
    where, params = _filters(cfg)
    outputs = cat.sql(f"""SELECT o.output_id, o.model, o.concept_set, o.concept_id, o.instruction_set,
                                 o.instruction_id, o.instruction, o.generation, o.n_tokens
                          FROM steering_outputs o WHERE {where} ORDER BY o.model, o.output_id""", params).fetchall()
    if cfg.judge != PROXY:  # proxy:<model>: only the outputs of that target model (as `axw status` suggests)
        outputs = [r for r in outputs if f"{PROXY}:{r[1]}" == cfg.judge]
        if not outputs:
            raise AxwError(f"no steering outputs of model {cfg.judge[len(PROXY) + 1:]!r} to judge with {cfg.judge} "
                           "(--judge proxy measures every output with its own model)")
    models = sorted({r[1] for r in outputs})
    result = ProxyJudgeResult(judge=", ".join(f"{PROXY}:{m}" for m in models) or PROXY)
    done = {(oid, judge, crit) for oid, judge, crit in cat.sql(
        "SELECT output_id, judge, criterion FROM judge_scores WHERE config_hash = ? AND judge LIKE 'proxy:%'",
        [jhash]).fetchall()}
    todo = {m: [r for r in outputs if r[1] == m
                and any((r[0], f"{PROXY}:{m}", c) not in done for c in cfg.criteria)] for m in models}
    result.skipped = sum(1 for r in outputs for c in cfg.criteria if (r[0], f"{PROXY}:{r[1]}", c) in done)
    if not any(todo.values()) and not (cfg.perplexity and _missing_perplexity(cat, cfg)):
        return result
    started = time.perf_counter()
    config = {"judge": PROXY, "judge_config_hash": jhash, "concept_set": cfg.concept_set,
              "methods": list(cfg.methods), "criteria": list(cfg.criteria)}
    with cat.run("judge", config) as run:
        for model in models:
            if todo[model]:
                _rate_model(cat, run, cfg, jhash, model, [r for r in outputs if r[1] == model], todo[model],
                            done, result, progress)
        if cfg.perplexity:
            result.perplexities = _perplexity(cat, run, cfg)
    result.seconds = time.perf_counter() - started
    return result


def _rate_model(cat: Catalog, run: Run, cfg, jhash: str, model: str, selection: list[tuple], todo: list[tuple],
                done: set, result, progress: bool) -> None:
    from axwarehouse.lm.loader import load, resolve_dtype

    judge = f"{PROXY}:{model}"
    lm = load(model, resolve_dtype(cfg.dtype, cfg.device))
    lm.model.to(cfg.device)
    concepts = {}
    if "concept" in cfg.criteria:
        for cs, cid in sorted({(r[2], r[3]) for r in todo}):
            concepts[(cs, cid)] = _concept_calibration(cat, run, judge, jhash, cs, cid, cfg.seed)
    lm_cals = {}
    if {"instruction", "fluency"} & set(cfg.criteria):
        for iset in sorted({r[4] for r in todo}, key=str):
            lm_cals[iset] = _lm_calibration(cat, run, cfg, judge, jhash, lm, iset,
                                            [r for r in selection if r[4] == iset], progress)
    # log p(output | instruction) is the conditional perplexity `axw judge` reports: write it from this pass
    need_ppl = {r[0] for r in _missing_perplexity(cat, cfg) if r[1] == model} if cfg.perplexity else set()
    from tqdm import tqdm

    bar = tqdm(total=len(todo), desc="proxy judge", unit="output", file=sys.stderr, disable=not progress,
               dynamic_ncols=True)
    try:
        for start in range(0, len(todo), cfg.chunk):
            chunk = todo[start:start + cfg.chunk]
            measures = pj.measure_texts(lm, [r[6] or "" for r in chunk], [r[7] or "" for r in chunk]) \
                if lm_cals else [None] * len(chunk)
            rows: list[dict] = []
            for r, m in zip(chunk, measures):
                for crit in cfg.criteria:
                    if (r[0], judge, crit) in done:
                        continue
                    if crit == "concept":
                        cal_id, clf = concepts[(r[2], r[3])]
                        value = clf.probability([r[7] or ""])[0]
                        th, measure = clf.thresholds, "classifier_probability"
                        extra = {"features": pj.CONCEPT_FEATURES_NAME}
                    else:
                        cal_ids, instr_th, flu_th, rep_th = lm_cals[r[4]]
                        if crit == "instruction":
                            value, th, measure = m.pmi, instr_th, "pmi_per_token"
                            extra = {"logp_given_instruction": m.logp_given_instruction,
                                     "logp_without_instruction": m.logp_without_instruction}
                        else:
                            value, th, measure = m.fluency, flu_th, "logp_per_token"
                            score, by_ppl, by_rep = pj.rate_fluency(m, flu_th, rep_th)
                            extra = {"perplexity_without_instruction":
                                     None if m.fluency is None else math.exp(-m.fluency),
                                     "perplexity_rating": by_ppl, "repetition_rating": by_rep,
                                     "repetition_measure": pj.REPETITION_MEASURE,
                                     "repetition_value": m.distinct_token_share,
                                     "repetition_calibration_id": cal_ids["repetition"],
                                     "repetition_threshold": rep_th.low}
                        extra["n_tokens"] = m.n_tokens
                        cal_id = cal_ids[crit]
                    if crit != "fluency":
                        score = th.rate([value])[0]
                    raw = {"rubric": pj.RUBRIC, "criterion": crit, "measure": measure, "value": value,
                           "calibration_id": cal_id, "threshold_low": th.low, "threshold_high": th.high, **extra}
                    rows.append({"output_id": r[0], "criterion": crit, "score": float(score),
                                 "raw": json.dumps(raw, sort_keys=True)})
            _write_ratings(run, judge, jhash, rows)
            if lm_cals:
                _write_perplexity(run, model, [(r[0], m) for r, m in zip(chunk, measures) if r[0] in need_ppl])
            result.rated += len(rows)
            bar.update(len(chunk))
    finally:
        bar.close()


def _write_perplexity(run: Run, model: str, rows: list[tuple[str, pj.TextMeasure]]) -> None:
    """`output_perplexity` rows from the proxy's conditional pass (same definition as stages.judge._perplexity)."""
    if not rows:
        return
    run.write("output_perplexity", pa.table({
        "output_id": [oid for oid, _ in rows], "model": [model] * len(rows),
        "perplexity": pa.array([None if m.logp_given_instruction is None else math.exp(-m.logp_given_instruction)
                                for _, m in rows], pa.float64()),
        "n_tokens": pa.array([m.n_tokens for _, m in rows], pa.int32()),
        "config_hash": [config_hash({"perplexity": "conditional-on-plain-prompt"})] * len(rows)}))


def _write_ratings(run: Run, judge: str, jhash: str, rows: list[dict]) -> None:
    if not rows:
        return
    n = len(rows)
    run.write("judge_scores", pa.table({
        "output_id": [r["output_id"] for r in rows], "judge": [judge] * n, "criterion": [r["criterion"] for r in rows],
        "score": pa.array([r["score"] for r in rows], pa.float64()), "score_source": [PROXY] * n,
        "expected_score": pa.array([None] * n, pa.float64()), "parse_ok": [True] * n,
        "parse_error": pa.array([None] * n, pa.string()), "raw": [r["raw"] for r in rows],
        # `rubric` is the judge_scores column the LLM-judge change adds; until that schema is in, the catalog drops
        # it (the raw JSON carries the rubric too)
        "request_hash": pa.array([None] * n, pa.string()), "rubric": [pj.RUBRIC] * n,
        "config_hash": [jhash] * n}))


def _stored_calibration(cat: Catalog, cal_id: str) -> pj.Thresholds | None:
    if not cat.table_files("judge_calibration"):
        return None
    row = cat.sql("SELECT threshold_low, threshold_high FROM judge_calibration WHERE calibration_id = ? LIMIT 1",
                  [cal_id]).fetchall()
    return pj.Thresholds(row[0][0], row[0][1]) if row else None


def _write_calibration(run: Run, cal_id: str, judge: str, criterion: str, measure: str, th: pj.Thresholds,
                       neg: list[float], pos: list[float], jhash: str, details: dict, concept_set=None,
                       concept_id=None, instruction_set=None, positive_quantile: float | None = pj.POS_QUANTILE,
                       negative_quantile: float = pj.NEG_QUANTILE) -> None:
    mean = lambda xs: float(sum(xs) / len(xs)) if xs else None  # noqa: E731
    run.write("judge_calibration", pa.table({
        "calibration_id": [cal_id], "judge": [judge], "rubric": [pj.RUBRIC], "criterion": [criterion],
        "measure": [measure], "concept_set": pa.array([concept_set], pa.string()),
        "concept_id": pa.array([concept_id], pa.int64()), "instruction_set": pa.array([instruction_set], pa.string()),
        "threshold_low": [th.low], "threshold_high": [th.high], "negative_quantile": [negative_quantile],
        "positive_quantile": pa.array([positive_quantile], pa.float64()), "n_negative": [len(neg)],
        "n_positive": [len(pos)],
        "negative_mean": [mean(neg)], "positive_mean": [mean(pos)], "auroc": [pj.auroc(neg, pos)],
        "details": [json.dumps(details, sort_keys=True)], "config_hash": [jhash]}))


def concept_training_texts(cat: Catalog, concept_set: str, concept_id: int, seed: int) -> tuple[list[str], list[str]]:
    """(positives, negatives) of a concept's train split: negatives = shared and own negatives, own hard
    negatives, and up to ``OTHER_POSITIVES_PER_POSITIVE`` × #positives of the other concepts' positives."""
    pos, neg, others = concept_training_groups(cat, concept_set, concept_id, seed)
    return pos, neg + others


def concept_training_groups(cat: Catalog, concept_set: str, concept_id: int, seed: int
                            ) -> tuple[list[str], list[str], list[str]]:
    """(positives, negatives, other concepts' positives) of a concept's train split (see
    :func:`concept_training_texts`); the classifier trains on the last two as negatives and sets its threshold on
    the negatives alone."""
    rows = cat.sql("""SELECT concept_id, category, output FROM generations
                      WHERE concept_set = ? AND split = 'train' AND output IS NOT NULL
                      ORDER BY concept_id, category, example_id""", [concept_set]).fetchall()
    pos = [t for c, cat_, t in rows if c == concept_id and cat_ == "positive"]
    neg = [t for c, cat_, t in rows if c in (concept_id, -1) and cat_ in ("negative", "hard_negative")]
    others = [t for c, cat_, t in rows if c not in (concept_id, -1) and cat_ == "positive"]
    cap = OTHER_POSITIVES_PER_POSITIVE * len(pos)
    if len(others) > cap:
        others = random.Random(seed).sample(others, cap)
    return pos, neg, others


def _concept_calibration(cat: Catalog, run: Run, judge: str, jhash: str, concept_set: str, concept_id: int,
                         seed: int) -> tuple[str, pj.ConceptClassifier]:
    pos, neg, others = concept_training_groups(cat, concept_set, concept_id, seed)
    try:
        clf = pj.ConceptClassifier.fit(pos, neg, seed, neighbours=others)
    except ValueError as exc:
        raise AxwError(f"proxy judge: concept {concept_set}/{concept_id}: {exc}") from None
    cal_id = config_hash({"judge": judge, "criterion": "concept", "proxy": jhash, "concept_set": concept_set,
                          "concept_id": concept_id, "texts": config_hash({"pos": pos, "neg": neg + others})})
    if _stored_calibration(cat, cal_id) is None:
        _write_calibration(run, cal_id, judge, "concept", "classifier_probability", clf.thresholds,
                           clf.heldout_negatives, clf.heldout_positives, jhash,
                           {"positives": "train positives of the concept (out-of-fold probabilities)",
                            "negatives": "train negatives + hard negatives (out-of-fold); other concepts' positives "
                                         "are trained on as negatives but left out of the threshold",
                            "neighbours_mean": sum(clf.heldout_neighbours) / len(clf.heldout_neighbours)
                            if clf.heldout_neighbours else None},
                           concept_set=concept_set, concept_id=concept_id, negative_quantile=pj.CONCEPT_NEG_QUANTILE)
    return cal_id, clf


def _lm_calibration(cat: Catalog, run: Run, cfg, judge: str, jhash: str, lm, instruction_set, selection: list[tuple],
                    progress: bool) -> tuple[dict[str, str], pj.Thresholds, pj.Thresholds, pj.Thresholds]:
    """Instruction, fluency and repetition thresholds for the instructions of ``selection`` (stored ones reused)."""
    by_id = {}
    for r in selection:
        by_id.setdefault(r[5], r[6] or "")
    ids = sorted(by_id, key=lambda x: (x is None, x))[:MAX_CALIBRATION_INSTRUCTIONS]
    instructions = [by_id[i] for i in ids]
    max_new = max(int(r[8] or 0) for r in selection) or 128
    base = {"judge": judge, "proxy": jhash, "instruction_set": instruction_set, "instruction_ids": ids,
            "instructions": config_hash(instructions), "max_new_tokens": max_new, "temperature": 1.0}
    cal_ids = {c: config_hash({**base, "criterion": c}) for c in ("instruction", "fluency", "repetition")}
    stored = {c: _stored_calibration(cat, cal_ids[c]) for c in cal_ids}
    if all(stored.values()):
        return cal_ids, stored["instruction"], stored["fluency"], stored["repetition"]
    if len(instructions) < 2:
        raise AxwError("proxy judge: instruction calibration needs outputs for at least 2 different instructions")
    if progress:
        print(f"proxy judge: calibrating on unsteered answers to {len(instructions)} instructions", file=sys.stderr)
    answers = pj.reference_answers(lm, instructions, max_new, 1.0, cfg.seed)
    cal = pj.calibrate_lm(lm, instructions, answers, cfg.seed)
    details = {"instruction_ids": ids, "n_answers_with_tokens": sum(1 for a in answers if a.strip()),
               "max_new_tokens": max_new, "temperature": 1.0,
               "positives": "unsteered answer under its own instruction",
               "negatives": f"unsteered answer under {pj.N_MISMATCHED} other instructions"}
    _write_calibration(run, cal_ids["instruction"], judge, "instruction", "pmi_per_token", cal.instruction,
                       cal.mismatched_pmi, cal.matched_pmi, jhash, details, instruction_set=instruction_set)
    details = {**details, "positives": "unsteered answers", "negatives": "the same answers, words shuffled"}
    _write_calibration(run, cal_ids["fluency"], judge, "fluency", "logp_per_token", cal.fluency,
                       cal.shuffled_fluency, cal.answer_fluency, jhash, details, instruction_set=instruction_set)
    details = {**details, "negatives": "the same answers collapsed into a loop half-way (first half of the words, "
               f"then one phrase of 1-{pj.LOOP_MAX_PHRASE_WORDS} of its words repeated)",
               "rule": "veto: below the threshold the fluency rating is 0, else the perplexity rating stands"}
    _write_calibration(run, cal_ids["repetition"], judge, "fluency", pj.REPETITION_MEASURE, cal.repetition,
                       cal.looped_distinct, cal.answer_distinct, jhash, details, instruction_set=instruction_set,
                       positive_quantile=None)
    return cal_ids, cal.instruction, cal.fluency, cal.repetition


class ProxyJudgeResult(JudgeResult):
    """What a proxy run did (no LLM calls, so no parse or cache figures)."""

    def summary(self) -> str:
        if not self.rated and not self.perplexities:
            return f"judge {self.judge}: all {self.skipped} ratings present, nothing to do"
        line = (f"judge {self.judge}: {self.rated} ratings in {self.seconds:.1f}s (measured: concept classifier, "
                f"PMI, perplexity, repetition), {self.skipped} already present")
        return line + (f"\nperplexity: {self.perplexities} outputs" if self.perplexities else "")

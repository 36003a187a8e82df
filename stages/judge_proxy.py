"""`axw judge --judge proxy` (the offline default): rate steered outputs with the proxy judge of
:mod:`axwarehouse.steering.proxy_judge` into `judge_scores`, its thresholds into `judge_calibration`.

* One judge per target model: ``judge = 'proxy:<model>'`` (the unsteered model of the outputs measures
  instruction relevance and fluency), ``score_source = 'proxy'``, ``parse_ok = true``, ``rubric = 'proxy-v3'``,
  ``raw`` = JSON of the measurement, its calibration id and thresholds (fluency: both of its measurements, the
  perplexity's and the repetition veto's, each with its calibration id and thresholds).
* Concept calibration per concept (its classifier is refitted deterministically each run: cheap, and no model
  file to store); instruction/fluency calibration per (model, output token budget) on the held-out calibration
  instructions steering never draws (axwarehouse/steering/instructions.py): the unsteered answers are generated
  once, and a later run reuses the stored thresholds of the same calibration id. No calibration depends on which
  outputs are rated, so an output's rating does not either.
* Rating goes through :class:`ProxyJudge` (the judge interface of stages/judge_rater.py), as `axw judge validate`
  rates its labelled texts.
* Incremental by (output_id, judge, criterion, config_hash) like the LLM judge; ratings are written in chunks,
  each an atomic file, so an interrupted run resumes without duplicates.
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from collections.abc import Sequence

import pyarrow as pa

from axwarehouse.catalog import Catalog, Run
from axwarehouse.errors import AxwError
from axwarehouse.lineage import config_hash
from axwarehouse.steering import proxy_judge as pj
from axwarehouse.steering.instructions import judge_calibration_set
from stages.judge_heldout import has_latent_eval, in_train_holdout
from stages.judge import JudgeResult, _filters, _missing_perplexity, _perplexity
from stages.judge_rater import Item, Rating, check_criteria

PROXY = "proxy"
CALIBRATION_MAX_NEW_TOKENS = 128  # token budget of calibration answers when an item's own is unknown (steer's default)
OTHER_POSITIVES_PER_POSITIVE = 4  # cap on other concepts' positives used as concept negatives


def proxy_hash(seed: int, dtype: str = "float32") -> str:
    """What defines a proxy rating besides the output and its calibration data (the measuring model's dtype
    included: a bfloat16 log-probability is another measurement than a float32 one)."""
    return config_hash({"rubric": pj.RUBRIC, **({} if dtype == "float32" else {"dtype": dtype}),
                        "neg_q": pj.NEG_QUANTILE, "pos_q": pj.POS_QUANTILE,
                        "folds": pj.CV_FOLDS, "n_mismatched": pj.N_MISMATCHED, "seed": seed,
                        "repetition": f"{pj.REPETITION_MEASURE}-veto-half_loop-{pj.LOOP_MAX_PHRASE_WORDS}",
                        "classifier": f"{pj.CONCEPT_FEATURES_NAME}+logreg-liblinear-C10-balanced",
                        "lm_calibration": "held-out-instructions-at-output-budget",
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
                _rate_model(cat, run, cfg, jhash, model, todo[model], done, result, progress)
        if cfg.perplexity:
            result.perplexities = _perplexity(cat, run, cfg)
    result.seconds = time.perf_counter() - started
    return result


class ProxyJudge:
    """The proxy judge of one target model as a :class:`stages.judge_rater.Judge`: concept classifiers fitted per
    concept on its train texts (never on held-out texts, never on activations), instruction and fluency thresholds
    calibrated on the unsteered model's answers to the held-out calibration instructions
    (:func:`axwarehouse.steering.instructions.judge_calibration_set`) at the item's token budget. Calibrations are
    fitted on first use and written to ``judge_calibration`` under ``run``; none depends on the items rated."""

    def __init__(self, cat: Catalog, run: Run, cfg, model: str, jhash: str, progress: bool = False):
        from axwarehouse.lm.loader import load, resolve_dtype

        self.cat, self.run, self.cfg, self.progress = cat, run, cfg, progress
        self.name, self.config_hash, self.rubric = f"{PROXY}:{model}", jhash, pj.RUBRIC
        self.lm = load(model, resolve_dtype(cfg.dtype, cfg.device))
        self.lm.model.to(cfg.device)
        self._concepts: dict[tuple[str, int], tuple[str, pj.ConceptClassifier]] = {}
        self._lm_cals: dict[int, tuple] = {}
        self.measures: dict[str, pj.TextMeasure] = {}  # the last measurement of each item (perplexity reuses it)

    def concept(self, concept_set: str, concept_id: int) -> tuple[str, pj.ConceptClassifier]:
        key = (concept_set, concept_id)
        if key not in self._concepts:
            self._concepts[key] = _concept_calibration(self.cat, self.run, self.name, self.config_hash, concept_set,
                                                       concept_id, self.cfg.seed)
        return self._concepts[key]

    def lm_calibration(self, budget: int) -> tuple:
        if budget not in self._lm_cals:
            self._lm_cals[budget] = _lm_calibration(self.cat, self.run, self.cfg, self.name, self.config_hash,
                                                    self.lm, budget, self.progress)
        return self._lm_cals[budget]

    def rate(self, items: Sequence[Item], criteria: Sequence[str]) -> list[Rating]:
        check_criteria(criteria)
        measured = bool({"instruction", "fluency"} & set(criteria))
        measures = pj.measure_texts(self.lm, [it.instruction for it in items], [it.output for it in items]) \
            if measured else [None] * len(items)
        out = []
        for it, m in zip(items, measures):
            if m is not None:
                self.measures[it.item_id] = m
            for crit in criteria:
                score, raw = self._rate_one(it, m, crit)
                out.append(Rating(it.item_id, crit, float(score), PROXY, json.dumps(raw, sort_keys=True)))
        return out

    def _rate_one(self, it: Item, m: pj.TextMeasure | None, crit: str) -> tuple[int, dict]:
        if crit == "concept":
            cal_id, clf = self.concept(it.concept_set, it.concept_id)
            value = clf.probability([it.output])[0]
            th, measure, extra = clf.thresholds, "classifier_probability", {"features": pj.CONCEPT_FEATURES_NAME}
            score = th.rate([value])[0]
        else:
            cal_ids, instr_th, flu_th, rep_th = self.lm_calibration(it.max_new_tokens or CALIBRATION_MAX_NEW_TOKENS)
            cal_id = cal_ids[crit]
            if crit == "instruction":
                value, th, measure = m.pmi, instr_th, "pmi_per_token"
                extra = {"logp_given_instruction": m.logp_given_instruction,
                         "logp_without_instruction": m.logp_without_instruction}
                score = th.rate([value])[0]
            else:
                value, th, measure = m.fluency, flu_th, "logp_per_token"
                score, by_ppl, by_rep = pj.rate_fluency(m, flu_th, rep_th)
                extra = {"perplexity_without_instruction": None if m.fluency is None else math.exp(-m.fluency),
                         "perplexity_rating": by_ppl, "repetition_rating": by_rep,
                         "repetition_measure": pj.REPETITION_MEASURE, "repetition_value": m.distinct_token_share,
                         "repetition_calibration_id": cal_ids["repetition"], "repetition_threshold": rep_th.low}
            extra["n_tokens"] = m.n_tokens
        raw = {"rubric": pj.RUBRIC, "criterion": crit, "measure": measure, "value": value, "calibration_id": cal_id,
               "threshold_low": th.low, "threshold_high": th.high, **extra}
        return score, raw


def _rate_model(cat: Catalog, run: Run, cfg, jhash: str, model: str, todo: list[tuple], done: set, result,
                progress: bool) -> None:
    from tqdm import tqdm

    judge = ProxyJudge(cat, run, cfg, model, jhash, progress)
    # log p(output | instruction) is the conditional perplexity `axw judge` reports: write it from this pass
    need_ppl = {r[0] for r in _missing_perplexity(cat, cfg) if r[1] == model} if cfg.perplexity else set()
    measured = bool({"instruction", "fluency"} & set(cfg.criteria))
    bar = tqdm(total=len(todo), desc="proxy judge", unit="output", file=sys.stderr, disable=not progress,
               dynamic_ncols=True)
    try:
        for start in range(0, len(todo), cfg.chunk):
            chunk = todo[start:start + cfg.chunk]
            items = [Item(r[0], r[2], r[3], r[8] or "", r[6] or "", r[7] or "", r[9]) for r in chunk]
            ratings = [x for x in judge.rate(items, cfg.criteria) if (x.item_id, judge.name, x.criterion) not in done]
            _write_ratings(run, judge.name, jhash, ratings)
            if measured:
                _write_perplexity(run, model, [(r[0], judge.measures[r[0]]) for r in chunk if r[0] in need_ppl])
            result.rated += len(ratings)
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
    negatives, and up to ``OTHER_POSITIVES_PER_POSITIVE`` × #positives of the other concepts' positives. A set
    without a latent_eval split leaves its held-out train slice out (stages/judge_heldout.py)."""
    pos, neg, others = concept_training_groups(cat, concept_set, concept_id, seed)
    return pos, neg + others


def concept_training_groups(cat: Catalog, concept_set: str, concept_id: int, seed: int
                            ) -> tuple[list[str], list[str], list[str]]:
    """(positives, negatives, other concepts' positives) of a concept's train split (see
    :func:`concept_training_texts`); the classifier trains on the last two as negatives and sets its threshold on
    the negatives alone."""
    rows = cat.sql("""SELECT concept_id, category, output, example_id FROM generations
                      WHERE concept_set = ? AND split = 'train' AND output IS NOT NULL
                      ORDER BY concept_id, category, example_id""", [concept_set]).fetchall()
    if not has_latent_eval(cat, concept_set):  # the held-out slice is the set's validation data: never trained on
        rows = [r for r in rows if not in_train_holdout(concept_set, r[3])]
    pos = [t for c, cat_, t, _ in rows if c == concept_id and cat_ == "positive"]
    neg = [t for c, cat_, t, _ in rows if c in (concept_id, -1) and cat_ in ("negative", "hard_negative")]
    others = [t for c, cat_, t, _ in rows if c not in (concept_id, -1) and cat_ == "positive"]
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


def _lm_calibration(cat: Catalog, run: Run, cfg, judge: str, jhash: str, lm, max_new: int, progress: bool
                    ) -> tuple[dict[str, str], pj.Thresholds, pj.Thresholds, pj.Thresholds]:
    """Instruction, fluency and repetition thresholds from the unsteered model's answers (``max_new`` tokens) to
    the held-out calibration instructions, which steering never draws (stored ones reused)."""
    iset = judge_calibration_set()
    instructions = list(iset.instructions)
    base = {"judge": judge, "proxy": jhash, "instruction_set": iset.name, "instructions": config_hash(instructions),
            "max_new_tokens": max_new, "temperature": 1.0}
    cal_ids = {c: config_hash({**base, "criterion": c}) for c in ("instruction", "fluency", "repetition")}
    stored = {c: _stored_calibration(cat, cal_ids[c]) for c in cal_ids}
    if all(stored.values()):
        return cal_ids, stored["instruction"], stored["fluency"], stored["repetition"]
    if progress:
        print(f"proxy judge: calibrating on unsteered answers to {len(instructions)} held-out instructions "
              f"({max_new} tokens)", file=sys.stderr)
    answers = pj.reference_answers(lm, instructions, max_new, 1.0, cfg.seed)
    try:
        cal = pj.calibrate_lm(lm, instructions, answers, cfg.seed)
    except ValueError as exc:
        raise AxwError(f"proxy judge: {exc}") from None
    details = {"instruction_set": iset.name, "n_answers_with_tokens": sum(1 for a in answers if a.strip()),
               "max_new_tokens": max_new, "temperature": 1.0,
               "positives": "unsteered answer under its own instruction",
               "negatives": f"unsteered answer under {pj.N_MISMATCHED} other instructions"}
    _write_calibration(run, cal_ids["instruction"], judge, "instruction", "pmi_per_token", cal.instruction,
                       cal.mismatched_pmi, cal.matched_pmi, jhash, details, instruction_set=iset.name)
    details = {**details, "positives": "unsteered answers", "negatives": "the same answers, words shuffled"}
    _write_calibration(run, cal_ids["fluency"], judge, "fluency", "logp_per_token", cal.fluency,
                       cal.shuffled_fluency, cal.answer_fluency, jhash, details, instruction_set=iset.name)
    details = {**details, "negatives": "the same answers collapsed into a loop half-way (first half of the words, "
               f"then one phrase of 1-{pj.LOOP_MAX_PHRASE_WORDS} of its words repeated)",
               "rule": "veto: below the threshold the fluency rating is 0, else the perplexity rating stands"}
    _write_calibration(run, cal_ids["repetition"], judge, "fluency", pj.REPETITION_MEASURE, cal.repetition,
                       cal.looped_distinct, cal.answer_distinct, jhash, details, instruction_set=iset.name,
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

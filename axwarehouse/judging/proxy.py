"""The proxy judge (no LLM: measured) as a judge of the one interface: :class:`ProxyJudge` rates items with the
concept classifiers and language-model thresholds of :mod:`axwarehouse.judging.proxy_calibration`;
:func:`proxy_hash` is what defines its ratings."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

from axwarehouse.catalog import Catalog, Run
from axwarehouse.judging.proxy_calibration import OTHER_POSITIVES_PER_POSITIVE, concept_calibration, lm_calibration
from axwarehouse.judging.rater import Item, Rating, check_criteria
from axwarehouse.lineage import config_hash
from axwarehouse.judging import proxy_measures as pj

PROXY = "proxy"
CALIBRATION_MAX_NEW_TOKENS = 128  # token budget of calibration answers when an item's own is unknown (steer's default)


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


class ProxyJudge:
    """The proxy judge of one target model as a :class:`axwarehouse.judging.rater.Judge`: concept classifiers fitted per
    concept on its train texts (never on held-out texts, never on activations), instruction and fluency thresholds
    calibrated on the unsteered model's answers to the held-out calibration instructions
    (:func:`axwarehouse.steering.instructions.judge_calibration_set`) at the item's token budget. Calibrations are
    fitted on first use and written to ``judge_calibration`` under ``run``; none depends on the items rated."""

    def __init__(self, cat: Catalog, run: Run, cfg, model: str, jhash: str, progress: bool = False):
        from axwarehouse.model.loader import load, resolve_dtype

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
            self._concepts[key] = concept_calibration(self.cat, self.run, self.name, self.config_hash, concept_set,
                                                       concept_id, self.cfg.seed)
        return self._concepts[key]

    def lm_calibration(self, budget: int) -> tuple:
        if budget not in self._lm_cals:
            self._lm_cals[budget] = lm_calibration(self.cat, self.run, self.cfg, self.name, self.config_hash,
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

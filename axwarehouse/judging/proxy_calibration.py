"""The proxy judge's calibration: which train texts a concept classifier is fitted on, the instruction, fluency
and repetition thresholds from the unsteered model's answers to the held-out calibration instructions, and their
``judge_calibration`` rows (a stored calibration of the same id is reused, never refitted)."""

from __future__ import annotations

import json
import random
import sys

import pyarrow as pa

from axwarehouse.catalog import Catalog, Run
from axwarehouse.errors import AxwError
from axwarehouse.judging.heldout import has_latent_eval, in_train_holdout
from axwarehouse.lineage import config_hash
from axwarehouse.judging import proxy_measures as pj
from axwarehouse.steering.instructions import judge_calibration_set

OTHER_POSITIVES_PER_POSITIVE = 4  # cap on other concepts' positives used as concept negatives


def stored_calibration(cat: Catalog, cal_id: str) -> pj.Thresholds | None:
    """The thresholds stored under ``cal_id`` in ``judge_calibration``, or None."""
    if not cat.table_files("judge_calibration"):
        return None
    row = cat.sql("SELECT threshold_low, threshold_high FROM judge_calibration WHERE calibration_id = ? LIMIT 1",
                  [cal_id]).fetchall()
    return pj.Thresholds(row[0][0], row[0][1]) if row else None


def write_calibration(run: Run, cal_id: str, judge: str, criterion: str, measure: str, th: pj.Thresholds,
                       neg: list[float], pos: list[float], jhash: str, details: dict, concept_set=None,
                       concept_id=None, instruction_set=None, positive_quantile: float | None = pj.POS_QUANTILE,
                       negative_quantile: float = pj.NEG_QUANTILE) -> None:
    """One ``judge_calibration`` row: the thresholds, the measurements they came from and how they were made."""
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
    without a latent_eval split leaves its held-out train slice out (:mod:`axwarehouse.judging.heldout`)."""
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


def concept_calibration(cat: Catalog, run: Run, judge: str, jhash: str, concept_set: str, concept_id: int,
                        seed: int) -> tuple[str, pj.ConceptClassifier]:
    """(calibration id, classifier) of one concept, fitted on its train texts; its thresholds stored once."""
    pos, neg, others = concept_training_groups(cat, concept_set, concept_id, seed)
    try:
        clf = pj.ConceptClassifier.fit(pos, neg, seed, neighbours=others)
    except ValueError as exc:
        raise AxwError(f"proxy judge: concept {concept_set}/{concept_id}: {exc}") from None
    cal_id = config_hash({"judge": judge, "criterion": "concept", "proxy": jhash, "concept_set": concept_set,
                          "concept_id": concept_id, "texts": config_hash({"pos": pos, "neg": neg + others})})
    if stored_calibration(cat, cal_id) is None:
        write_calibration(run, cal_id, judge, "concept", "classifier_probability", clf.thresholds,
                           clf.heldout_negatives, clf.heldout_positives, jhash,
                           {"positives": "train positives of the concept (out-of-fold probabilities)",
                            "negatives": "train negatives + hard negatives (out-of-fold); other concepts' positives "
                                         "are trained on as negatives but left out of the threshold",
                            "neighbours_mean": sum(clf.heldout_neighbours) / len(clf.heldout_neighbours)
                            if clf.heldout_neighbours else None},
                           concept_set=concept_set, concept_id=concept_id, negative_quantile=pj.CONCEPT_NEG_QUANTILE)
    return cal_id, clf


def lm_calibration(cat: Catalog, run: Run, cfg, judge: str, jhash: str, lm, max_new: int, progress: bool
                   ) -> tuple[dict[str, str], pj.Thresholds, pj.Thresholds, pj.Thresholds]:
    """Instruction, fluency and repetition thresholds from the unsteered model's answers (``max_new`` tokens) to
    the held-out calibration instructions, which steering never draws (stored ones reused)."""
    iset = judge_calibration_set()
    instructions = list(iset.instructions)
    base = {"judge": judge, "proxy": jhash, "instruction_set": iset.name, "instructions": config_hash(instructions),
            "max_new_tokens": max_new, "temperature": 1.0}
    cal_ids = {c: config_hash({**base, "criterion": c}) for c in ("instruction", "fluency", "repetition")}
    stored = {c: stored_calibration(cat, cal_ids[c]) for c in cal_ids}
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
    write_calibration(run, cal_ids["instruction"], judge, "instruction", "pmi_per_token", cal.instruction,
                       cal.mismatched_pmi, cal.matched_pmi, jhash, details, instruction_set=iset.name)
    details = {**details, "positives": "unsteered answers", "negatives": "the same answers, words shuffled"}
    write_calibration(run, cal_ids["fluency"], judge, "fluency", "logp_per_token", cal.fluency,
                       cal.shuffled_fluency, cal.answer_fluency, jhash, details, instruction_set=iset.name)
    details = {**details, "negatives": "the same answers collapsed into a loop half-way (first half of the words, "
               f"then one phrase of 1-{pj.LOOP_MAX_PHRASE_WORDS} of its words repeated)",
               "rule": "veto: below the threshold the fluency rating is 0, else the perplexity rating stands"}
    write_calibration(run, cal_ids["repetition"], judge, "fluency", pj.REPETITION_MEASURE, cal.repetition,
                       cal.looped_distinct, cal.answer_distinct, jhash, details, instruction_set=iset.name,
                       positive_quantile=None)
    return cal_ids, cal.instruction, cal.fluency, cal.repetition

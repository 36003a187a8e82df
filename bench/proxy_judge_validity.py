"""How well the proxy judge's three ratings agree with known answers on Concept10's ``latent_eval`` split, which
nothing of the judge trains or calibrates on (the validation set: measured here, never used to choose).

Not a test: it prints figures per concept and the macro means.

* concept — each concept's classifier (fitted on its train texts exactly as `axw judge --judge proxy` fits it)
  rates the concept's latent_eval positives, negatives and hard negatives: false-positive rate (rated ≥ 1) on the
  negatives and, separately, on the hard negatives; true-positive rate (rated ≥ 1) and the share rated 2 on the
  positives; AUROC of the rating (and of the classifier's probability) between positives and negatives.
* instruction — the first ``--lm-texts`` positives of each concept rated under their own instruction (relevant)
  and under the instruction of the same-numbered positive of the next concept (irrelevant); AUROC of the rating.
* fluency — the same texts as written (fluent) against the same texts with their words shuffled and collapsed into a
  loop (:func:`half_loop`; disfluent); AUROC of the rating. Instruction and fluency thresholds are calibrated on
  the unsteered model's answers to the shipped instruction file's last 20 instructions (the ones steering never
  draws), with a 128-token budget.

    python bench/proxy_judge_validity.py [--concepts 10] [--lm-texts 8] [--model embedded:smollm2] [--no-lm]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from axwarehouse.catalog import Catalog  # noqa: E402
from axwarehouse.judging import proxy_measures as pj  # noqa: E402
from axwarehouse.stages.demo import DEMO_DATA  # noqa: E402
from axwarehouse.stages.import_axbench import import_axbench  # noqa: E402
from axwarehouse.judging.proxy_calibration import concept_training_groups  # noqa: E402

CALIBRATION_INSTRUCTIONS = 20  # the shipped file's last ones: steering never draws them
CALIBRATION_TOKENS = 128


def auroc(labels: list[int], scores: list[float]) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


def concept_figures(cat: Catalog, concepts: list[int], seed: int = 42) -> list[dict]:
    rows = []
    for c in concepts:
        pos, neg, others = concept_training_groups(cat, "concept10", c, seed)
        clf = pj.ConceptClassifier.fit(pos, neg, seed, neighbours=others)
        texts = {k: [t for (t,) in cat.sql(
            "SELECT output FROM generations WHERE concept_set = 'concept10' AND split = 'latent_eval' AND "
            "concept_id = ? AND category = ? ORDER BY example_id", [c, k]).fetchall()]
            for k in ("positive", "negative", "hard_negative")}
        prob = {k: clf.probability(v) if v else [] for k, v in texts.items()}
        rate = {k: np.array(clf.thresholds.rate(v)) for k, v in prob.items()}
        labels = [1] * len(rate["positive"]) + [0] * len(rate["negative"])
        rows.append({"concept": c, "n_pos": len(rate["positive"]), "n_neg": len(rate["negative"]),
                     "n_hard": len(rate["hard_negative"]),
                     "fpr": float(np.mean(rate["negative"] >= 1)),
                     "fpr_hard": float(np.mean(rate["hard_negative"] >= 1)) if len(rate["hard_negative"]) else None,
                     "tpr": float(np.mean(rate["positive"] >= 1)), "rated_2": float(np.mean(rate["positive"] == 2)),
                     "auroc_rating": auroc(labels, list(rate["positive"]) + list(rate["negative"])),
                     "auroc_probability": auroc(labels, prob["positive"] + prob["negative"]),
                     "low": clf.thresholds.low, "high": clf.thresholds.high})
    return rows


def lm_figures(cat: Catalog, concepts: list[int], n_texts: int, model: str, seed: int = 42) -> tuple[dict, dict]:
    from axwarehouse.model.loader import load
    from axwarehouse.steering.instructions import load_instructions

    lm = load(model)
    pool = list(load_instructions().instructions[-CALIBRATION_INSTRUCTIONS:])
    t0 = time.perf_counter()
    cal = pj.calibrate_lm(lm, pool, pj.reference_answers(lm, pool, CALIBRATION_TOKENS, 1.0, seed), seed)
    print(f"calibration on {len(pool)} held-out instructions: {time.perf_counter() - t0:.0f}s; thresholds "
          f"instruction {cal.instruction}, fluency {cal.fluency}, repetition veto {cal.repetition}")
    heldout = {c: cat.sql("SELECT input, output FROM generations WHERE concept_set = 'concept10' AND "
                          "split = 'latent_eval' AND concept_id = ? AND category = 'positive' ORDER BY example_id "
                          "LIMIT ?", [c, n_texts]).fetchall() for c in range(10)}
    instr, flu = {}, {}
    rng = random.Random(seed)
    for c in concepts:
        other = heldout[(c + 1) % 10]
        texts = [o for _, o in heldout[c]]
        own = [i for i, _ in heldout[c]]
        wrong = [other[k % len(other)][0] for k in range(len(texts))]
        broken = [pj.half_loop(pj.shuffle_words(t, rng), rng) for t in texts]
        m = pj.measure_texts(lm, own + wrong + [""] * len(broken), texts + texts + broken)
        n = len(texts)
        ri = cal.instruction.rate([x.pmi for x in m[:2 * n]])
        rf = [pj.rate_fluency(x, cal.fluency, cal.repetition)[0] for x in m[:n]] + \
             [pj.rate_fluency(x, cal.fluency, cal.repetition)[0] for x in m[2 * n:]]
        labels = [1] * n + [0] * n
        instr[c] = {"auroc_rating": auroc(labels, ri), "auroc_pmi": auroc(labels, [x.pmi for x in m[:2 * n]]),
                    "fpr": float(np.mean(np.array(ri[n:]) >= 1)), "tpr": float(np.mean(np.array(ri[:n]) >= 1))}
        flu[c] = {"auroc_rating": auroc(labels, rf), "fpr": float(np.mean(np.array(rf[n:]) >= 1)),
                  "tpr": float(np.mean(np.array(rf[:n]) >= 1))}
    return instr, flu


def fmt(v) -> str:
    return "  -  " if v is None else f"{v:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concepts", type=int, default=10)
    ap.add_argument("--lm-texts", type=int, default=8, help="positives per concept rated for instruction/fluency")
    ap.add_argument("--model", default="embedded:smollm2")
    ap.add_argument("--no-lm", action="store_true", help="concept figures only (no language model)")
    args = ap.parse_args()
    concepts = list(range(args.concepts))
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, Catalog(Path(tmp) / "catalog.duckdb") as cat:
        import_axbench(cat, DEMO_DATA, "concept10")
        rows = concept_figures(cat, concepts)
        print(f"concept (classifier {pj.CONCEPT_FEATURES_NAME}; rated >= 1 = present)")
        print("concept | n pos/neg/hard | FPR neg | FPR hard | TPR | rated 2 | AUROC rating | AUROC P | low | high")
        for r in rows:
            print(f"{r['concept']} | {r['n_pos']}/{r['n_neg']}/{r['n_hard']} | {fmt(r['fpr'])} | {fmt(r['fpr_hard'])} | "
                  f"{fmt(r['tpr'])} | {fmt(r['rated_2'])} | {fmt(r['auroc_rating'])} | "
                  f"{fmt(r['auroc_probability'])} | {fmt(r['low'])} | {fmt(r['high'])}")
        macro = {k: float(np.mean([r[k] for r in rows if r[k] is not None]))
                 for k in ("fpr", "fpr_hard", "tpr", "rated_2", "auroc_rating", "auroc_probability")}
        print(f"macro | | {fmt(macro['fpr'])} | {fmt(macro['fpr_hard'])} | {fmt(macro['tpr'])} | "
              f"{fmt(macro['rated_2'])} | {fmt(macro['auroc_rating'])} | {fmt(macro['auroc_probability'])} | |")
        print(f"max FPR on negatives: {max(r['fpr'] for r in rows):.3f} (concept "
              f"{max(rows, key=lambda r: r['fpr'])['concept']})")
        if not args.no_lm:
            instr, flu = lm_figures(cat, concepts, args.lm_texts, args.model)
            print(f"\ninstruction and fluency ({args.lm_texts} positives per concept)")
            print("concept | instruction AUROC rating | AUROC PMI | FPR | TPR | fluency AUROC rating | FPR | TPR")
            for c in concepts:
                i, f = instr[c], flu[c]
                print(f"{c} | {fmt(i['auroc_rating'])} | {fmt(i['auroc_pmi'])} | {fmt(i['fpr'])} | {fmt(i['tpr'])} | "
                      f"{fmt(f['auroc_rating'])} | {fmt(f['fpr'])} | {fmt(f['tpr'])}")
            mean = lambda d, k: float(np.mean([v[k] for v in d.values()]))  # noqa: E731
            print(f"macro | {fmt(mean(instr, 'auroc_rating'))} | {fmt(mean(instr, 'auroc_pmi'))} | "
                  f"{fmt(mean(instr, 'fpr'))} | {fmt(mean(instr, 'tpr'))} | {fmt(mean(flu, 'auroc_rating'))} | "
                  f"{fmt(mean(flu, 'fpr'))} | {fmt(mean(flu, 'tpr'))}")
    print(f"total {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()

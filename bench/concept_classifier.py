"""The proxy judge's concept classifier: n-grams counted once per text (`ConceptClassifier.fit`) against the
baseline of scikit-learn's TfidfVectorizer fitted inside every fold and again for the final fit, in the same run.

Not a test: it prints figures. For each Concept10 concept, both fit on the concept's training texts (as
`axw judge --judge proxy` builds them); prints seconds per concept (best of ``--rounds``), the ratio, and the
largest difference of out-of-fold probabilities and of probabilities on the latent-eval texts.

    python bench/concept_classifier.py [--concepts 10] [--rounds 2]
"""

from __future__ import annotations

import argparse
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
from axwarehouse.judging.proxy_calibration import concept_training_texts  # noqa: E402


def per_fold_vectorizer(pos: list[str], neg: list[str], seed: int = 42):
    """The baseline: TfidfVectorizer(**CONCEPT_FEATURES) + the same logistic regression step, fitted per fold."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline

    from axwarehouse.judging.concept_features import regression

    texts, y = pos + neg, np.array([1] * len(pos) + [0] * len(neg))
    model = make_pipeline(TfidfVectorizer(**pj.CONCEPT_FEATURES), regression(seed))
    folds = StratifiedKFold(n_splits=pj.CV_FOLDS, shuffle=True, random_state=seed)
    oof = cross_val_predict(model, texts, y, cv=folds, method="predict_proba")[:, 1]
    return np.concatenate([oof[y == 1], oof[y == 0]]), model.fit(texts, y)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concepts", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        with Catalog(Path(tmp) / "catalog.duckdb") as cat:
            import_axbench(cat, DEMO_DATA, "concept10")
            texts = {c: concept_training_texts(cat, "concept10", c, 42) for c in range(args.concepts)}
            evals = [t for (t,) in cat.sql("SELECT output FROM generations WHERE concept_set = 'concept10' AND "
                                           "split = 'latent_eval' ORDER BY concept_id, example_id").fetchall()]
    base_s, ours_s, diff = [], [], 0.0
    for c, (pos, neg) in texts.items():
        b, o = [], []
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            oof, model = per_fold_vectorizer(pos, neg)
            b.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            clf = pj.ConceptClassifier.fit(pos, neg)
            o.append(time.perf_counter() - t0)
        base_s.append(min(b))
        ours_s.append(min(o))
        ours = np.array(clf.heldout_positives + clf.heldout_negatives)
        diff = max(diff, float(np.abs(ours - oof).max()),
                   float(np.abs(np.array(clf.probability(evals)) - model.predict_proba(evals)[:, 1]).max()))
    n = len(texts)
    print(f"{n} concepts, {len(texts[0][0]) + len(texts[0][1])} training texts each (concept 0), "
          f"{len(evals)} latent-eval texts scored")
    print(f"  TfidfVectorizer per fold (baseline): {sum(base_s) / n:.3f} s per concept")
    print(f"  counts once (ConceptClassifier.fit): {sum(ours_s) / n:.3f} s per concept, "
          f"{sum(base_s) / sum(ours_s):.2f}x the baseline's speed")
    print(f"  largest probability difference (out-of-fold and latent-eval): {diff:.2e}")


if __name__ == "__main__":
    main()

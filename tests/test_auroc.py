"""The SQL AUROC view against scikit-learn on the same scores, ties included."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from sklearn.metrics import roc_auc_score

from axwarehouse.catalog import Catalog


def _write_scores(cat: Catalog, scores: dict[int, tuple[np.ndarray, np.ndarray]]) -> None:
    gens, lat = [], []
    ex = 0
    for cid, (labels, s) in scores.items():
        for y, v in zip(labels, s):
            gens.append({"concept_set": "t", "split": "latent_eval", "example_id": ex, "concept_id": cid,
                         "category": {1: "positive", 0: "negative", 2: "hard_negative"}[int(y)]})
            lat.append({"method": "m", "model": "x", "layer": 1, "concept_set": "t", "concept_id": cid,
                        "split": "latent_eval", "example_id": ex, "score": float(v)})
            ex += 1
    g = pa.Table.from_pylist(gens)
    for col in ("genre", "input", "output", "output_concept", "dataset_category", "source", "generator_model",
                "sae_link"):
        g = g.append_column(col, pa.nulls(len(g), pa.string()))
    g = g.append_column("sae_id", pa.nulls(len(g), pa.int64()))
    s = pa.Table.from_pylist(lat)
    s = s.append_column("max_position", pa.nulls(len(s), pa.int32()))
    s = s.append_column("max_token", pa.nulls(len(s), pa.string()))
    s = s.append_column("token_scores", pa.nulls(len(s), pa.list_(pa.float32())))
    with cat.run("test", {"t": 1}) as run:
        run.write("generations", g)
        run.write("latent_scores", s)


def test_auroc_view_matches_sklearn(tmp_path):
    rng = np.random.default_rng(0)
    cases = {}
    for cid in range(6):
        n = 40 + cid * 7
        labels = rng.integers(0, 3, size=n)
        labels[:2] = [0, 1]
        # coarse rounding makes many ties, across and within classes
        scores = np.round(rng.normal(size=n) + 0.8 * (labels == 1), 1 if cid % 2 else 3)
        cases[cid] = (labels, scores)
    cases[6] = (np.array([0, 1, 0, 1, 2]), np.array([0.5, 0.5, 0.5, 0.5, 9.0]))  # all tied → 0.5
    with Catalog(tmp_path / "catalog.duckdb") as cat:
        _write_scores(cat, cases)
        got = dict(cat.sql("SELECT concept_id, auroc FROM latent_auroc ORDER BY concept_id").fetchall())
        lb = cat.sql("SELECT mean_auroc, n_concepts FROM latent_leaderboard").fetchall()
    for cid, (labels, scores) in cases.items():
        keep = labels != 2  # hard negatives are not part of AUROC (docs/axbench-recipes.md §3.2)
        expect = roc_auc_score(labels[keep], scores[keep])
        assert abs(got[cid] - expect) < 1e-9, (cid, got[cid], expect)
    assert got[6] == 0.5
    assert abs(lb[0][0] - np.mean(list(got.values()))) < 1e-12 and lb[0][1] == 7

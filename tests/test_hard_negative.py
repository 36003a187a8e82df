"""View latent_hard_negative (AxBench's HardNegativeEvaluator in SQL) against an independent recomputation with
scikit-learn's roc_curve, on hand-built scores with the edge cases (ties, missing scores, constant scores, a concept
with no threshold better than chance) and on the scores of a real warehouse."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_curve

from axwarehouse.catalog import Catalog
from axwarehouse.table_views import SQL_DIR
from conftest import axw

KEY = ["method", "model", "layer", "concept_set", "config_hash", "concept_id"]


def reference(rows: pd.DataFrame) -> dict[tuple, dict]:
    """Per method x concept: AxBench's recipe written out with pandas + roc_curve (normalise over all the
    concept's rows, NaN -> 0; Youden-J threshold from roc_curve on positives vs negatives; accuracies)."""
    out = {}
    for key, g in rows.groupby(KEY):
        s = g["score"].astype(float)
        norm = ((s - s.min()) / (s.max() - s.min())).fillna(0.0)
        pn = g["category"].isin(["positive", "negative"])
        fpr, tpr, thr = roc_curve((g["category"][pn] == "positive").astype(int), norm[pn])
        best = thr[int(np.argmax(tpr - fpr))]
        if np.isinf(best):
            continue
        pos = norm[g["category"] == "positive"]
        hard = norm[g["category"] == "hard_negative"]
        if len(hard) == 0:
            continue
        pa_, ha = float((pos >= best).mean()), float((hard < best).mean())
        out[key] = {"threshold": float(best), "positive_accuracy": pa_, "hard_negative_accuracy": ha,
                    "macro_accuracy": (pa_ + ha) / 2}
    return out


def view_rows(con) -> dict[tuple, dict]:
    df = con.sql("SELECT * FROM latent_hard_negative").df()
    return {tuple(r[k] for k in KEY): {c: r[c] for c in ("threshold", "positive_accuracy",
                                                          "hard_negative_accuracy", "macro_accuracy")}
            for _, r in df.iterrows()}


def assert_same(view: dict, ref: dict) -> None:
    assert set(view) == set(ref)
    for key, want in ref.items():
        assert view[key] == pytest.approx(want, abs=1e-12), key


def hand_built() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    rows = []

    def add(method, cid, cat, scores):
        rows.extend({"method": method, "model": "m", "layer": 1, "concept_set": "s", "config_hash": "h",
                     "concept_id": cid, "category": cat, "score": x} for x in scores)

    for cid in range(6):  # random scores rounded to 1 decimal: many ties across categories
        add("a", cid, "positive", np.round(rng.normal(1.0, 1.0, 12), 1))
        add("a", cid, "negative", np.round(rng.normal(0.0, 1.0, 12), 1))
        add("a", cid, "hard_negative", np.round(rng.normal(0.6, 1.0, 5), 1))
    add("b", 0, "positive", [3.0, None, 2.0, 2.0])  # a missing score counts as normalised 0
    add("b", 0, "negative", [0.0, 2.0, None, 1.0])
    add("b", 0, "hard_negative", [2.0, 5.0, None])
    add("b", 1, "positive", [1.0, 1.0])  # every score equal: all normalise to 0, J = 0 -> no row
    add("b", 1, "negative", [1.0, 1.0])
    add("b", 1, "hard_negative", [1.0])
    add("b", 2, "positive", [0.0, 0.1])  # positives below negatives: J <= 0 everywhere -> no row
    add("b", 2, "negative", [0.5, 0.9])
    add("b", 2, "hard_negative", [0.2])
    add("b", 3, "positive", [0.4, 0.6, 0.5, 0.9])  # two thresholds tie on J: the higher one wins
    add("b", 3, "negative", [0.45, 0.1, 0.2, 0.05])
    add("b", 3, "hard_negative", [0.45, 0.7])
    add("b", 4, "positive", [1.0, 2.0])  # no hard negatives: no row (AxBench reports nothing)
    add("b", 4, "negative", [0.0, 0.5])
    return pd.DataFrame(rows)


def test_view_equals_sklearn_recomputation_on_hand_built_scores():
    rows = hand_built()
    con = duckdb.connect()
    con.register("rows_df", rows)
    con.execute("CREATE TABLE latent_labelled AS SELECT * FROM rows_df")
    con.execute((SQL_DIR / "latent_hard_negative.sql").read_text())
    view, ref = view_rows(con), reference(rows)
    assert_same(view, ref)
    b = {k[5]: v for k, v in view.items() if k[0] == "b"}
    assert set(b) == {0, 3}  # 1 (constant), 2 (J <= 0) and 4 (no hard negatives) have no row
    # concept b/3 by hand: J = 3/4 - 0/4 at raw score .5 and 4/4 - 1/4 at .4, an exact tie; the higher threshold
    # wins, normalised over .05-.9: (.5 - .05) / .85. Hard negatives .45 (below) and .7 (above): 1/2 right; the
    # lower threshold .4 would have given 4/4 and 0/2.
    assert b[3]["threshold"] == pytest.approx(0.45 / 0.85, abs=1e-12)
    assert b[3]["positive_accuracy"] == 0.75 and b[3]["hard_negative_accuracy"] == 0.5
    assert b[3]["macro_accuracy"] == 0.625
    assert len([k for k in view if k[0] == "a"]) >= 5


def test_view_on_a_warehouse_matches_sklearn_and_feeds_the_leaderboard(tiny_warehouse):
    path, where = tiny_warehouse
    for cmd in ("train", "latent"):
        code, _, err = axw("--catalog", path, cmd, *where, "--method", "diffmean", "--method", "pca")
        assert code == 0, err
    with Catalog(path, read_only=True) as cat:
        check_warehouse(cat)


def check_warehouse(cat: Catalog) -> None:
    """latent_hard_negative equals the recomputation on the warehouse's own latent_labelled rows, and the
    leaderboard's hard_negative_macro is the mean of its macro accuracies."""
    rows = cat.sql("SELECT * FROM latent_labelled").df()
    assert len(rows)
    view, ref = view_rows(cat), reference(rows)
    assert view and set(view) == set(ref)
    assert_same(view, ref)
    board = cat.sql("SELECT method, config_hash, concept_set, layer, hard_negative_macro FROM latent_leaderboard"
                    ).fetchall()
    for method, chash, cset, layer, macro in board:
        want = [v["macro_accuracy"] for k, v in ref.items() if (k[0], k[4], k[3], k[2]) == (method, chash, cset,
                                                                                           layer)]
        assert macro == pytest.approx(np.mean(want), abs=1e-12), method

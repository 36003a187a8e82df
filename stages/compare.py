"""`axw compare A B`: per-concept deltas between two systems with a paired significance test.

A side is a run id (or a unique prefix of one, ≥ 6 characters) of a `train` or `latent` run, or a method name,
optionally pinned to one config as ``method@confighash``. Latent comparisons use per-concept AUROC from the
`latent_auroc` view; steering comparisons (``--metric steering``) use the per-concept test score at the chosen
factor from the steering views. Pairs are matched on (concept_set, concept_id).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from axwarehouse.catalog import Catalog
from axwarehouse.errors import AxwError
from axwarehouse.report.stats import PairedTest, paired_test

KEY = ["method", "model", "layer", "concept_set", "config_hash"]


@dataclass
class Comparison:
    label_a: str
    label_b: str
    metric: str
    rows: pd.DataFrame  # concept_set, concept_id, concept, a, b, delta
    test: PairedTest

    def summary(self) -> str:
        t = self.test
        return "\n".join([
            f"{self.metric}: B = {self.label_b}  vs  A = {self.label_a}  over {t.n} shared concepts",
            f"  mean A {t.mean_a:.4f}   mean B {t.mean_b:.4f}   mean delta (B - A) {t.mean_delta:+.4f} "
            f"[95% bootstrap CI {t.ci_low:+.4f}, {t.ci_high:+.4f}]",
            f"  B better on {t.wins}, worse on {t.losses}, tied on {t.ties} concepts",
            f"  paired tests (two-sided): Wilcoxon signed-rank p = {t.wilcoxon_p:.4g}; paired t-test p = {t.t_p:.4g}",
        ])


def _latent_side(cat: Catalog, spec: str, concept_set: str | None, model: str | None,
                 layer: int | None) -> tuple[str, pd.DataFrame]:
    where, params = [], []
    for col, val in (("concept_set", concept_set), ("model", model), ("layer", layer)):
        if val is not None:
            where.append(f"{col} = ?")
            params.append(val)
    filt = (" AND " + " AND ".join(where)) if where else ""
    keys: list[tuple] = []
    if len(spec) >= 6 and "@" not in spec:
        runs = cat.sql("SELECT run_id, stage FROM runs WHERE starts_with(run_id, ?)", [spec]).fetchall()
        if len(runs) > 1:
            raise AxwError(f"run id prefix {spec!r} matches {len(runs)} runs; give more characters")
        if runs:
            run_id, stage = runs[0]
            table = {"latent": "latent_scores", "train": "method_artifacts"}.get(stage)
            if table is None:
                raise AxwError(f"run {run_id} is a {stage} run; compare needs a train or latent run (or a method)")
            keys = cat.sql(f"SELECT DISTINCT {', '.join(KEY)} FROM {table} WHERE run_id = ?{filt}",
                           [run_id, *params]).fetchall()
            if not keys:
                raise AxwError(f"run {run_id} wrote no {table} rows{' matching the filters' if where else ''}")
    if not keys:
        method, _, chash = spec.partition("@")
        keys = cat.sql(f"SELECT DISTINCT {', '.join(KEY)} FROM latent_auroc WHERE method = ? "
                       f"AND starts_with(config_hash, ?){filt}", [method, chash, *params]).fetchall()
        if not keys:
            raise AxwError(f"{spec!r} is neither a run id nor a method with latent scores (see `axw status`)")
    if len(keys) > 1:
        choices = "; ".join(f"{m}@{h} ({cs}, {mo}, L{la})" for m, mo, la, cs, h in keys)
        raise AxwError(f"{spec!r} matches {len(keys)} scored configs: {choices}. Pin one with METHOD@HASH, "
                       "--concept-set, --model or --layer")
    m, mo, la, cs, h = keys[0]
    df = cat.sql("SELECT concept_set, concept_id, auroc AS value FROM latent_auroc WHERE method = ? AND model = ? "
                 "AND layer = ? AND concept_set = ? AND config_hash = ?", [m, mo, la, cs, h]).df()
    return f"{m}@{h[:8]} ({mo} L{la}, {cs})", df


def _steering_side(cat: Catalog, spec: str) -> tuple[str, pd.DataFrame]:
    from axwarehouse.report import steering_pages as sp

    reason = sp.steering_available(cat)
    if reason:
        raise AxwError(f"no steering data to compare: {reason}")
    per, best = sp.steering_frames(cat)
    at = sp.steering_at_best(per, best)
    rows = at[at["method"] == spec]
    if rows.empty:
        raise AxwError(f"method {spec!r} has no judged steering outputs")
    if rows[["model", "layer", "concept_set"]].drop_duplicates().shape[0] > 1:
        raise AxwError(f"method {spec!r} has steering scores for several models/layers/concept sets")
    return spec, rows[["concept_set", "concept_id"]].assign(value=rows["aggregate"].to_numpy())


def compare(cat: Catalog, a: str, b: str, metric: str = "latent", concept_set: str | None = None,
            model: str | None = None, layer: int | None = None) -> Comparison:
    """Per-concept values of A and B, their deltas and a paired test over the shared concepts."""
    if metric == "latent":
        (la, da), (lb, db) = (_latent_side(cat, s, concept_set, model, layer) for s in (a, b))
    elif metric == "steering":
        (la, da), (lb, db) = (_steering_side(cat, s) for s in (a, b))
    else:
        raise AxwError(f"unknown metric {metric!r} (latent | steering)")
    m = da.merge(db, on=["concept_set", "concept_id"], suffixes=("_a", "_b")).rename(
        columns={"value_a": "a", "value_b": "b"})
    if m.empty:
        raise AxwError(f"{a} and {b} share no scored concepts")
    names = cat.sql("SELECT concept_set, concept_id, concept FROM concepts").df()
    m = m.merge(names, on=["concept_set", "concept_id"], how="left")
    m["delta"] = m["b"] - m["a"]
    m = m.sort_values(["concept_set", "concept_id"]).reset_index(drop=True)
    test = paired_test(m["a"].to_numpy(dtype=float), m["b"].to_numpy(dtype=float))
    return Comparison(la, lb, "AUROC" if metric == "latent" else "steering score", 
                      m[["concept_set", "concept_id", "concept", "a", "b", "delta"]], test)

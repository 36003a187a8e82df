"""Steering report sections, drawn from the steering views when they exist (`steering_scores`: one row per judged
generation; `steering_best_factor`: the factor chosen per method × concept on the selection split), and a clear
"no steering data yet" page otherwise.

The steering views are owned by the steering stage; this module reads them through :data:`COLUMNS`, the one place
that names their columns (first candidate present wins), so a renamed column is a one-line change here.
"""

from __future__ import annotations

import pandas as pd

from axwarehouse.catalog import Catalog
from axwarehouse.report import charts
from axwarehouse.report.html import Page, table
from axwarehouse.report.stats import N_BOOT, bootstrap_mean_ci

STEERING_VIEWS = ("steering_scores", "steering_best_factor")
CRITERIA = ("aggregate", "concept", "instruction", "fluency")

#: logical column -> candidate names in the steering views (first present wins)
COLUMNS = {
    "method": ("method",),
    "model": ("model",),
    "layer": ("layer",),
    "concept_set": ("concept_set",),
    "concept_id": ("concept_id",),
    "factor": ("factor",),
    "split": ("split",),
    "aggregate": ("aggregate", "score", "harmonic_mean", "lm_judge_rating"),
    "concept": ("concept_score", "relevance_concept", "concept_rating"),
    "instruction": ("instruction_score", "relevance_instruction", "instruction_rating"),
    "fluency": ("fluency_score", "fluency", "fluency_rating"),
    "best_factor": ("best_factor", "factor"),
    "judge": ("judge",),
    "steer_config_hash": ("steer_config_hash", "config_hash"),
    "judge_config_hash": ("judge_config_hash",),
}
#: a (method, concept) result is identified by these; the last four may be absent (then constant)
KEYS = ("method", "model", "layer", "concept_set", "judge", "steer_config_hash", "judge_config_hash", "concept_id")
OPTIONAL = ("model", "layer", "concept_set", "judge", "steer_config_hash", "judge_config_hash")


def _view_columns(cat: Catalog, view: str) -> list[str]:
    return [r[0] for r in cat.sql("SELECT column_name FROM duckdb_columns() WHERE table_name = ?", [view]).fetchall()]


def steering_available(cat: Catalog) -> str | None:
    """None when the steering views exist and hold rows; else the reason there is nothing to draw."""
    have = {r[0] for r in cat.sql("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    missing = [v for v in STEERING_VIEWS if v not in have]
    if missing:
        return f"the steering views ({', '.join(missing)}) do not exist in this catalog yet"
    if cat.count("steering_scores") == 0:
        return "steering_scores is empty: run `axw steer` and `axw judge`"
    return None


def _select(cat: Catalog, view: str, wanted: tuple[str, ...]) -> str:
    """``SELECT`` list mapping the view's columns to logical names (NULL for an absent optional key)."""
    cols = set(_view_columns(cat, view))
    parts = []
    for logical in wanted:
        found = next((c for c in COLUMNS[logical] if c in cols), None)
        if found is None and logical in OPTIONAL:
            parts.append(f"'' AS {logical}")
        elif found is None:
            raise KeyError(f"{view} has no column for {logical} (looked for {', '.join(COLUMNS[logical])})")
        else:
            parts.append(f'"{found}" AS {logical}')
    return ", ".join(parts)


def _rule_filter(cat: Catalog, view: str, judge_failures: str) -> str:
    """WHERE clause keeping one judge-failure rule (the views hold both: 'zero' as AxBench, 'drop')."""
    return f"WHERE judge_failures = '{judge_failures}'" if "judge_failures" in _view_columns(cat, view) else ""


def steering_frames(cat: Catalog, judge_failures: str = "zero") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per concept × method × factor × split mean of every criterion, chosen factor per method × concept), under
    one judge-failure rule (default: failed ratings score 0, as AxBench)."""
    if judge_failures not in ("zero", "drop"):
        raise ValueError(f"judge_failures must be zero or drop, not {judge_failures!r}")
    crit = tuple(c for c in CRITERIA if any(n in _view_columns(cat, "steering_scores") for n in COLUMNS[c]))
    sel = _select(cat, "steering_scores", KEYS + ("factor", "split") + crit)
    means = ", ".join(f"avg({c}) AS {c}" for c in crit)
    keys = ", ".join(KEYS)
    per = cat.sql(f"SELECT {keys}, factor, split, {means}, count(*) AS n "
                  f"FROM (SELECT {sel} FROM steering_scores {_rule_filter(cat, 'steering_scores', judge_failures)}) "
                  f"GROUP BY {keys}, factor, split").df()
    best = cat.sql(f"SELECT DISTINCT {_select(cat, 'steering_best_factor', KEYS + ('best_factor',))} "
                   f"FROM steering_best_factor {_rule_filter(cat, 'steering_best_factor', judge_failures)}").df()
    return per, best


def judge_labels(cat: Catalog) -> dict[tuple[str, str], str]:
    """(judge, judge config hash) → what judged, from the `judge_settings` view (empty when it is absent)."""
    have = {r[0] for r in cat.sql("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    if "judge_settings" not in have:
        return {}
    return {(j, h): label for j, h, label in cat.sql(
        "SELECT judge, judge_config_hash, judge_label FROM judge_settings WHERE judge_label IS NOT NULL").fetchall()}


def _group_label(df: pd.DataFrame) -> pd.Series:
    judge = df["judge"].fillna("").astype(str)
    # one judge rated with several settings or rubrics: each config is its own group, named by its hash
    cfg = df["judge_config_hash"].fillna("").astype(str)
    several = df.assign(_j=judge, _c=cfg).groupby("_j")["_c"].transform("nunique") > 1
    judge = judge.where(~several, judge + "@" + cfg.str[:8])
    return (df["concept_set"].fillna("").astype(str) + " · " + df["model"].fillna("").astype(str) + " · L"
            + df["layer"].astype("string").fillna("?") + judge.where(judge == "", " · judged by " + judge))


def _method_label(df: pd.DataFrame) -> pd.Series:
    """``method``, or ``method@hash6`` where one method has several steering configs in the same group."""
    n_cfg = df.groupby(["group", "method"])["steer_config_hash"].transform("nunique")
    return df["method"].where(n_cfg <= 1, df["method"] + "@" + df["steer_config_hash"].astype(str).str[:6])


def steering_at_best(per: pd.DataFrame, best: pd.DataFrame) -> pd.DataFrame:
    """Per method × concept: test-split means at the factor chosen on the selection split."""
    test = per[per["split"] == "test"]
    keys = list(KEYS)
    m = test.merge(best, on=keys, how="inner")
    m = m[m["factor"] == m["best_factor"]].copy()
    m["group"] = _group_label(m)
    m["method"] = _method_label(m)
    return m


def steering_leaderboard_rows(at_best: pd.DataFrame) -> pd.DataFrame:
    """Mean test aggregate score over concepts per method with a bootstrap CI over concepts."""
    rows = []
    for (group, method), g in at_best.groupby(["group", "method"], dropna=False):
        lo, hi = bootstrap_mean_ci(g["aggregate"].to_numpy(dtype=float))
        rows.append({"group": group, "method": method, "mean": float(g["aggregate"].mean()), "ci_low": lo,
                     "ci_high": hi, "n_concepts": int(g["concept_id"].nunique())})
    return pd.DataFrame(rows).sort_values(["group", "mean"], ascending=[True, False]).reset_index(drop=True)


def add_steering_leaderboard(page: Page, cat: Catalog) -> list[tuple[str, dict]]:
    page.heading("Steering: judge score at the chosen factor")
    reason = steering_available(cat)
    if reason:
        page.add(f'<div class="empty">No steering data yet ({reason.replace("`", "")}).</div>')
        return []
    per, best = steering_frames(cat)
    lb = steering_leaderboard_rows(steering_at_best(per, best))
    page.para(f"Per concept: mean aggregate score (harmonic mean of concept, instruction and fluency, 0–2) on the "
              f"test split at the factor chosen on the selection split; mean over concepts with a 95% percentile "
              f"bootstrap CI over concepts ({N_BOOT} resamples). A judge answer without a valid rating scores 0, "
              f"as in AxBench.")
    page.add(table(["group", "method", "mean score", "CI low", "CI high", "concepts"],
                   [(r.group, r.method, r.mean, r.ci_low, r.ci_high, r.n_concepts) for r in lb.itertuples()]))
    spec = page.chart(charts.leaderboard_ci(lb, "mean aggregate score (0–2)", "Steering leaderboard (95% CI)",
                                            domain=(0, 2)), "steering_leaderboard")
    return [("steering_leaderboard", spec)]


def _validity_lines(cat: Catalog, rows: pd.DataFrame) -> list[str]:
    """The judge-validity line (axwarehouse.stages.leaderboard.validity_line) of each judge config × concept set shown."""
    from axwarehouse.judging.validity import validity_line

    if not {"judge", "judge_config_hash", "concept_set"} <= set(rows.columns):
        return []
    keys = {(j, h, cs) for j, h, cs in zip(rows["judge"], rows["judge_config_hash"], rows["concept_set"])
            if isinstance(j, str) and isinstance(h, str) and isinstance(cs, str)}
    return [validity_line(cat, j, h, cs) for j, h, cs in sorted(keys)]


def steering_page(cat: Catalog, nav) -> tuple[Page, list[tuple[str, dict]]]:
    """Score vs factor per method and criterion (chosen factor marked) and the concept-vs-fluency trade-off."""
    page = Page("Steering", nav)
    reason = steering_available(cat)
    if reason:
        page.add(f'<div class="empty"><strong>No steering data yet.</strong><br>{reason.replace("`", "")}.<br>'
                 "This page fills in once <code>axw steer</code> and <code>axw judge</code> have run and "
                 "<code>axw report</code> runs again.</div>")
        return page, []
    per, best = steering_frames(cat)
    labels = judge_labels(cat)
    exported = []
    crit = [c for c in CRITERIA if c in per.columns]
    at_best = steering_at_best(per, best)
    per["group"] = _group_label(per)
    per["method"] = _method_label(per)
    for gi, (group, rows) in enumerate(per.groupby("group", sort=True)):
        page.heading(group)
        notes = sorted({labels[k] for k in zip(rows["judge"], rows["judge_config_hash"]) if k in labels})
        if notes:  # says whose ratings these are (e.g. the offline proxy judge, not AxBench's LLM judge)
            page.para("Judge: " + "; ".join(notes) + ".")
        for line in _validity_lines(cat, rows):  # how often that judge is right on labelled held-out texts
            page.para(line + ".")
        test = rows[rows["split"] == "test"]
        long = test.melt(id_vars=["method", "concept_id", "factor"], value_vars=crit, var_name="criterion",
                         value_name="score")
        curve = long.groupby(["method", "criterion", "factor"], as_index=False)["score"].mean()
        gb = at_best[at_best["group"] == group]
        modal = gb.groupby("method")["best_factor"].agg(lambda s: s.value_counts().sort_index().idxmax())
        chosen = curve[[modal.get(m) == f for m, f in zip(curve["method"], curve["factor"])]]
        page.para("Test split, mean over concepts and instructions at each factor; diamonds mark the factor chosen "
                  "most often on the selection split (the choice is made per concept).")
        name = f"steering_factor_{gi}"
        exported.append((name, page.chart(charts.steering_factor_curves(curve, chosen, "Score vs steering factor"),
                                          name)))
        if {"concept", "fluency"} <= set(gb.columns) and len(gb):
            means = gb.groupby("method", as_index=False)[["concept", "fluency"]].mean()
            page.para("Trade-off at the chosen factor, test split: a small point per concept (points may overlap), "
                      "a large mark per method at its mean over concepts; the table below gives these means.")
            name = f"steering_tradeoff_{gi}"
            exported.append((name, page.chart(charts.tradeoff_scatter(
                gb[["method", "concept_id", "best_factor", "concept", "fluency"]].rename(
                    columns={"best_factor": "factor"}), means,
                "Concept score vs fluency at the chosen factor (test split)"), name)))
        table_rows = gb.groupby("method", as_index=False)[crit].mean()
        page.add(table(["method", *crit], table_rows[["method", *crit]].itertuples(index=False)))
    return page, exported

"""Latent (concept-detection) report pages: leaderboard with bootstrap CIs, ROC curves and per-concept AUROC,
subspace geometry, and one page per concept with the per-token highlighter. All data comes from SQL views
(`latent_auroc`, `latent_leaderboard`, `latent_roc`, `latent_roc_mean`, `latent_examples`, `direction_cosine`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from axwarehouse.catalog import Catalog
from axwarehouse.report import charts
from axwarehouse.report.html import Page, esc, fmt_num, table
from axwarehouse.report.stats import N_BOOT, bootstrap_mean_ci
from axwarehouse.report.tokens import display_token

CATEGORY_ORDER = ["positive", "negative", "hard_negative"]


@dataclass(frozen=True)
class Group:
    """One leaderboard: a concept set scored on one model layer."""

    concept_set: str
    model: str
    layer: int

    @property
    def label(self) -> str:
        return f"{self.concept_set} · {self.model} · L{self.layer}"

    @property
    def params(self) -> list:
        return [self.concept_set, self.model, self.layer]


def latent_groups(cat: Catalog, concept_set: str | None = None) -> list[Group]:
    where, params = ("WHERE concept_set = ?", [concept_set]) if concept_set else ("", None)
    rows = cat.sql(f"SELECT DISTINCT concept_set, model, layer FROM latent_leaderboard {where} ORDER BY ALL",
                   params).fetchall()
    return [Group(*r) for r in rows]


def method_labels(df: pd.DataFrame) -> pd.Series:
    """``method``, or ``method@hash6`` where one method has several configs in the same group."""
    n_cfg = df.groupby(["concept_set", "model", "layer", "method"])["config_hash"].transform("nunique")
    return df["method"].where(n_cfg <= 1, df["method"] + "@" + df["config_hash"].str[:6])


def latent_leaderboard_rows(cat: Catalog, groups: list[Group]) -> pd.DataFrame:
    """latent_leaderboard rows plus a bootstrap-over-concepts CI of each mean AUROC (from latent_auroc)."""
    if not groups:
        return pd.DataFrame(columns=["group", "method", "config_hash", "mean", "ci_low", "ci_high", "n_concepts",
                                     "note"])
    sets = sorted({g.concept_set for g in groups})
    lb = cat.sql(f"SELECT * FROM latent_leaderboard WHERE concept_set IN ({','.join('?' * len(sets))})",
                 sets).df()
    per = cat.sql(f"SELECT method, model, layer, concept_set, config_hash, concept_id, auroc FROM latent_auroc "
                  f"WHERE concept_set IN ({','.join('?' * len(sets))})", sets).df()
    keep = {(g.concept_set, g.model, g.layer) for g in groups}
    lb = lb[[k in keep for k in zip(lb["concept_set"], lb["model"], lb["layer"])]].copy()
    key = ["method", "model", "layer", "concept_set", "config_hash"]
    cis = {k: bootstrap_mean_ci(g["auroc"].to_numpy(dtype=float)) for k, g in per.groupby(key)}
    lb["ci_low"] = [cis.get(tuple(r), (np.nan, np.nan))[0] for r in lb[key].itertuples(index=False)]
    lb["ci_high"] = [cis.get(tuple(r), (np.nan, np.nan))[1] for r in lb[key].itertuples(index=False)]
    lb["method"] = method_labels(lb)
    lb["group"] = [Group(s, m, int(layer)).label for s, m, layer in zip(lb["concept_set"], lb["model"], lb["layer"])]
    lb = lb.rename(columns={"mean_auroc": "mean"})
    return lb.sort_values(["group", "mean"], ascending=[True, False]).reset_index(drop=True)


def add_latent_leaderboard(page: Page, lb: pd.DataFrame) -> list[tuple[str, dict]]:
    """Leaderboard table + CI chart on ``page``; returns (name, spec) of exported charts."""
    page.heading("Concept detection (latent): mean AUROC over concepts")
    if lb.empty:
        page.add('<div class="empty">No latent scores yet: run <code>axw train</code> and <code>axw latent</code>'
                 " (or <code>axw demo</code>).</div>")
        return []
    page.para(f"AUROC per concept: positives vs negatives (hard negatives excluded, as AxBench). Mean = unweighted "
              f"mean over concepts (view latent_leaderboard); 95% CI = percentile bootstrap over concepts "
              f"({N_BOOT} resamples, seed 0).")
    # note: what an SAE row is built on (ours vs a loaded SAE), joint dictionaries (view latent_leaderboard)
    notes = "note" in lb.columns and bool(lb["note"].notna().any())
    # AxBench's hard-negative macro accuracy (view latent_hard_negative), mean over concepts
    hard = lb["hard_negative_macro"] if "hard_negative_macro" in lb.columns else pd.Series(np.nan, index=lb.index)
    rows = [(r.group, r.method, r.config_hash, r.mean, r.ci_low, r.ci_high, int(r.n_concepts), h)
            + ((r.note if isinstance(r.note, str) else "",) if notes else ())
            for r, h in zip(lb.itertuples(), hard.astype(float))]
    page.add(table(["group", "method", "config", "mean AUROC", "CI low", "CI high", "concepts",
                    "hard-negative macro acc."] + (["note"] if notes else []), rows))
    spec = page.chart(charts.leaderboard_ci(lb[["group", "method", "mean", "ci_low", "ci_high", "n_concepts"]],
                                            "mean AUROC", "Latent leaderboard (95% bootstrap CI over concepts)"),
                      "latent_leaderboard")
    return [("latent_leaderboard", spec)]


def roc_page(cat: Catalog, groups: list[Group], nav, concept_names: dict) -> tuple[Page, list[tuple[str, dict]]]:
    """Per-method ROC curves (every concept + the vertical average) and the per-concept AUROC distribution."""
    page = Page("ROC curves and per-concept AUROC", nav)
    exported = []
    if not groups:
        page.add('<div class="empty">No latent scores yet.</div>')
        return page, exported
    for gi, g in enumerate(groups):
        page.heading(g.label)
        where = "concept_set = ? AND model = ? AND layer = ?"
        curves = cat.sql(f"SELECT method, model, layer, concept_set, config_hash, concept_id, threshold, fpr, tpr "
                         f"FROM latent_roc WHERE {where} ORDER BY method, config_hash, concept_id, fpr, tpr",
                         g.params).df()
        mean = cat.sql(f"SELECT method, model, layer, concept_set, config_hash, fpr, tpr, n_concepts "
                       f"FROM latent_roc_mean WHERE {where} ORDER BY method, config_hash, fpr", g.params).df()
        auroc = cat.sql(f"SELECT method, model, layer, concept_set, config_hash, concept_id, auroc, n_pos, n_neg "
                        f"FROM latent_auroc WHERE {where} ORDER BY method, config_hash, concept_id", g.params).df()
        for df in (curves, mean, auroc):
            df["method"] = method_labels(df)
        curves["order"] = np.arange(len(curves))
        curves.loc[np.isinf(curves["threshold"].astype(float)), "threshold"] = np.nan  # the (0, 0) origin
        name = f"roc_{gi}"
        exported.append((name, page.chart(charts.roc_curves(
            curves[["method", "concept_id", "threshold", "fpr", "tpr", "order"]], mean[["method", "fpr", "tpr"]],
            "ROC per concept (thin) and the mean over concepts (bold, 101-point vertical average)"), name)))
        auroc["concept"] = [concept_names.get((g.concept_set, int(c)), "") for c in auroc["concept_id"]]
        name = f"auroc_distribution_{gi}"
        exported.append((name, page.chart(charts.auroc_distribution(
            auroc[["method", "concept_id", "concept", "auroc"]], "Per-concept AUROC"), name)))
        pivot = auroc.pivot_table(index="concept_id", columns="method", values="auroc")
        page.heading("AUROC per concept", 3)
        rows = [(int(cid), concept_names.get((g.concept_set, int(cid)), ""), *[float(v) for v in vals])
                for cid, vals in zip(pivot.index, pivot.to_numpy())]
        page.add(table(["concept_id", "concept", *pivot.columns.tolist()], rows))
    return page, exported


def geometry_page(cat: Catalog, groups: list[Group], nav, max_concepts: int) -> tuple[Page, list[tuple[str, dict]]]:
    """Cosine similarity of concept directions across methods (view direction_cosine)."""
    page = Page("Subspace geometry: cosine similarity of concept directions", nav)
    exported = []
    where = "concept_set = ? AND model = ? AND layer = ?"
    agroups = [Group(*r) for r in cat.sql("SELECT DISTINCT concept_set, model, layer FROM method_artifacts "
                                          "WHERE direction IS NOT NULL ORDER BY ALL").fetchall()]
    if groups:
        agroups = [g for g in agroups if g.concept_set in {x.concept_set for x in groups}]
    if not agroups:
        page.add('<div class="empty">No trained directions yet: run <code>axw train</code>.</div>')
        return page, exported
    page.para("Same concept, different methods: mean cosine over concepts of the two methods' directions (sign "
              "matters: PCA and LAT directions have an arbitrary sign, so also read the mean |cosine| in the "
              "tooltip). Below, every direction against every other for the first concepts.")
    for gi, g in enumerate(agroups):
        page.heading(g.label)
        mm = cat.sql(f"""SELECT method_a, config_a, method_b, config_b, avg(cosine) AS cosine,
                                avg(abs(cosine)) AS mean_abs_cosine, count(*) AS n_concepts
                         FROM direction_cosine WHERE {where} AND concept_a = concept_b
                         GROUP BY ALL ORDER BY ALL""", g.params).df()
        for side in ("a", "b"):
            tmp = mm.assign(method=mm[f"method_{side}"], config_hash=mm[f"config_{side}"], concept_set=g.concept_set,
                            model=g.model, layer=g.layer)
            mm[f"method_{side}"] = method_labels(tmp).to_numpy()
        name = f"cosine_methods_{gi}"
        exported.append((name, page.chart(charts.cosine_heatmap(
            mm[["method_a", "method_b", "cosine", "mean_abs_cosine", "n_concepts"]], "method_a", "method_b",
            "Mean cosine of the same concept's directions, method vs method", text=True, size=260), name)))
        ids = [r[0] for r in cat.sql(f"SELECT DISTINCT concept_a FROM direction_cosine WHERE {where} ORDER BY 1 "
                                     f"LIMIT {int(max_concepts)}", g.params).fetchall()]
        full = cat.sql(f"""SELECT method_a, config_a, concept_a, method_b, config_b, concept_b, cosine
                           FROM direction_cosine WHERE {where} AND concept_a IN ({','.join('?' * len(ids))})
                             AND concept_b IN ({','.join('?' * len(ids))})""", g.params + ids + ids).df()
        for side in ("a", "b"):
            tmp = full.assign(method=full[f"method_{side}"], config_hash=full[f"config_{side}"],
                              concept_set=g.concept_set, model=g.model, layer=g.layer)
            full[f"direction_{side}"] = [f"{m} #{c}" for m, c in zip(method_labels(tmp), full[f"concept_{side}"])]
        name = f"cosine_directions_{gi}"
        exported.append((name, page.chart(charts.cosine_heatmap(
            full[["direction_a", "direction_b", "cosine"]], "direction_a", "direction_b",
            f"Every direction vs every direction (concepts {ids[0]}–{ids[-1]})", size=560), name)))
    return page, exported


# -- concept pages ---------------------------------------------------------------------------------------------

def _highlight(tokens, scores, scale: float) -> str:
    """Tokens as spans shaded by their score (orange = positive, blue = negative), scores in the tooltip."""
    if tokens is None or len(tokens) == 0:
        return ""
    scores = [] if scores is None else list(scores)
    out = []
    for i, tok in enumerate(tokens):
        text = esc(display_token(tok))
        if i >= len(scores) or scores[i] is None:
            out.append(text)
            continue
        s = float(scores[i])
        alpha = min(1.0, abs(s) / scale) if scale > 0 else 0.0
        color = f"rgba(255,128,0,{alpha:.2f})" if s >= 0 else f"rgba(60,120,230,{alpha:.2f})"
        out.append(f'<span class="tok" style="background:{color}" title="{s:.3f}">{text}</span>')
    return "".join(out)


def _example_block(row, scale: float) -> str:
    badge = f'<span class="badge {esc(row.category)}">{esc(row.category)}</span>'
    meta = (f'{badge}<span class="badge">example {esc(row.example_id)}</span>'
            f'<span class="badge">max {esc(fmt_num(row.score))} on “{esc(display_token(row.max_token))}”</span>')
    if row.category == "hard_negative" and row.output_concept:
        meta += f'<span class="badge">contrast: {esc(row.output_concept)}</span>'
    return f'<div class="example" data-example="{esc(row.example_id)}">{meta}\n{_highlight(row.tokens, row.token_scores, scale)}</div>'


def choose_methods(lb: pd.DataFrame, method: str | None) -> dict[tuple[str, str, int], tuple[str, str]]:
    """Per (concept_set, model, layer): (method, config_hash) whose scores the concept pages highlight."""
    chosen = {}
    if lb.empty:  # no latent scores yet (a steering-only catalog): no columns to group by
        return chosen
    for (cs, model, layer), rows in lb.groupby(["concept_set", "model", "layer"]):
        rows = rows.sort_values("mean", ascending=False)
        if method:
            rows = rows[rows["method"].str.split("@").str[0] == method]
        if len(rows):
            chosen[(cs, model, int(layer))] = (rows.iloc[0]["method"].split("@")[0], rows.iloc[0]["config_hash"])
    return chosen


def concept_pages(cat: Catalog, concepts: pd.DataFrame, lb: pd.DataFrame, method: str | None, nav,
                  top_k: int = 10) -> dict[tuple[str, int], Page]:
    """One page per concept: its AUROC per method, score strip, top activating examples, hard negatives, and all
    examples with per-token highlighting by the chosen method (default: the best method of its leaderboard)."""
    chosen = choose_methods(lb, method)
    pages: dict[tuple[str, int], Page] = {}
    for r in concepts.itertuples():
        page = Page(f"Concept {r.concept_id}: {r.concept}", nav, root="../../")
        facts = [("concept set", r.concept_set), ("concept id", r.concept_id), ("genre", r.genre)]
        page.add(table(["", ""], facts, css="data"))
        ref = r.ref or ""
        if ref.startswith(("https://", "http://")):  # only web links become anchors (no javascript: URLs)
            page.add(f'<p class="note">reference: <a href="{esc(ref)}">{esc(ref)}</a></p>')
        elif ref:
            page.para(f"reference: {ref}")
        pages[(r.concept_set, int(r.concept_id))] = page
    for (cs, model, layer), (meth, chash) in chosen.items():
        auroc = cat.sql("SELECT method, config_hash, concept_id, auroc FROM latent_auroc WHERE concept_set = ? "
                        "AND model = ? AND layer = ?", [cs, model, layer]).df()
        auroc["model"], auroc["layer"], auroc["concept_set"] = model, layer, cs
        auroc["method"] = method_labels(auroc)
        ex = cat.sql("""SELECT concept_id, example_id, category, score, max_token, output_concept, token_scores, tokens
                        FROM latent_examples WHERE method = ? AND model = ? AND layer = ? AND concept_set = ?
                          AND config_hash = ? ORDER BY concept_id, score DESC NULLS LAST, example_id""",
                     [meth, model, layer, cs, chash]).df()
        for cid, rows in ex.groupby("concept_id", sort=True):
            page = pages.get((cs, int(cid)))
            if page is None:
                continue
            page.heading(f"{model} · layer {layer} · highlighted by {meth} [{chash}]")
            a = auroc[auroc["concept_id"] == cid].sort_values("auroc", ascending=False)
            page.add(table(["method", "AUROC"], [(m, float(v)) for m, v in zip(a["method"], a["auroc"])]))
            page.chart(charts.score_strip(rows[["example_id", "category", "score"]],
                                          f"{meth}: max-pooled score of this concept's examples"), f"scores_{cid}")
            scale = max((abs(float(s)) for ts in rows["token_scores"] if ts is not None for s in ts), default=0.0)
            page.para(f"Token shading: |score| / {scale:.3f} (the largest |token score| on this page); orange = "
                      f"positive, blue = negative; hover a token for its score. Prefix tokens of the chat template "
                      f"are not scored and not shown.")
            page.heading(f"Top {top_k} activating examples", 3)
            page.add("".join(_example_block(x, scale) for x in rows.head(top_k).itertuples()))
            hard = rows[rows["category"] == "hard_negative"]
            page.heading(f"Hard negatives ({len(hard)}), highest score first", 3)
            page.add("".join(_example_block(x, scale) for x in hard.itertuples())
                     or '<p class="note">This concept has no hard negatives.</p>')
            for cat_name in ("positive", "negative"):
                sub = rows[rows["category"] == cat_name]
                page.add(f"<details><summary>All {esc(cat_name)} examples ({len(sub)})</summary>"
                         + "".join(_example_block(x, scale) for x in sub.itertuples()) + "</details>")
    return pages

"""Altair chart builders for the report pages. Each takes tidy rows (a pandas DataFrame read from a view) and
returns a chart; no statistic is computed here beyond what Vega-Lite draws (boxplot quartiles)."""

from __future__ import annotations

import altair as alt
import pandas as pd

WIDTH = 520


def _method_color(methods: list[str]) -> alt.Color:
    return alt.Color("method:N", scale=alt.Scale(domain=sorted(methods)), legend=alt.Legend(title="method"))


def leaderboard_ci(df: pd.DataFrame, value: str, title: str, domain: tuple[float, float] | None = None) -> alt.Chart:
    """Mean per method with its bootstrap CI (rows: group, method, mean, ci_low, ci_high, n_concepts)."""
    scale = alt.Scale(domain=list(domain)) if domain else alt.Scale(zero=False)
    base = alt.Chart(df).encode(y=alt.Y("method:N", sort=alt.EncodingSortField("mean", order="descending"),
                                         title=None))
    tip = ["method:N", alt.Tooltip("mean:Q", format=".3f"), alt.Tooltip("ci_low:Q", format=".3f"),
           alt.Tooltip("ci_high:Q", format=".3f"), "n_concepts:Q"]
    bars = base.mark_rule(strokeWidth=2, color="#555").encode(x=alt.X("ci_low:Q", scale=scale, title=value),
                                                              x2="ci_high:Q", tooltip=tip)
    points = base.mark_point(filled=True, size=80).encode(x=alt.X("mean:Q", scale=scale), color=_method_color(
        df["method"].unique().tolist()), tooltip=tip)
    chart = alt.layer(bars, points).properties(width=WIDTH, height=alt.Step(22))
    if df["group"].nunique() > 1:
        return chart.facet(row=alt.Row("group:N", title=None)).properties(title=title)
    return chart.properties(title=title)


def roc_curves(curves: pd.DataFrame, mean: pd.DataFrame, title: str) -> alt.ConcatChart:
    """Per method: every concept's ROC curve (thin) and the vertically averaged curve (bold)."""
    charts = []
    for method in sorted(curves["method"].unique()):
        c = curves[curves["method"] == method]
        m = mean[mean["method"] == method]
        diag = alt.Chart(pd.DataFrame({"fpr": [0.0, 1.0], "tpr": [0.0, 1.0]})).mark_line(
            strokeDash=[4, 4], color="#999").encode(x="fpr:Q", y="tpr:Q")
        thin = alt.Chart(c).mark_line(strokeWidth=1, opacity=0.35, color="#4c78a8").encode(
            x=alt.X("fpr:Q", title="false positive rate", scale=alt.Scale(domain=[0, 1])),
            y=alt.Y("tpr:Q", title="true positive rate", scale=alt.Scale(domain=[0, 1])),
            detail="concept_id:N", order="order:Q",
            tooltip=["concept_id:N", alt.Tooltip("threshold:Q", format=".3f"), alt.Tooltip("fpr:Q", format=".3f"),
                     alt.Tooltip("tpr:Q", format=".3f")])
        bold = alt.Chart(m).mark_line(strokeWidth=3, color="#e45756").encode(
            x="fpr:Q", y="tpr:Q", tooltip=[alt.Tooltip("fpr:Q", format=".2f"), alt.Tooltip("tpr:Q", format=".3f")])
        charts.append(alt.layer(diag, thin, bold).properties(width=220, height=220, title=str(method)))
    return alt.concat(*charts, columns=4).properties(title=title)


def auroc_distribution(df: pd.DataFrame, title: str) -> alt.LayerChart:
    """Per-concept AUROC per method: box plot with every concept as a point (rows: method, concept_id, concept, auroc)."""
    methods = df["method"].unique().tolist()
    box = alt.Chart(df).mark_boxplot(extent="min-max", opacity=0.35, size=24).encode(
        y=alt.Y("method:N", title=None), x=alt.X("auroc:Q", scale=alt.Scale(domain=[0, 1]), title="AUROC per concept"),
        color=_method_color(methods))
    pts = alt.Chart(df).mark_circle(size=40, opacity=0.8).encode(
        y="method:N", x="auroc:Q", yOffset=alt.YOffset("jitter:Q"), color=_method_color(methods),
        tooltip=["method:N", "concept_id:N", "concept:N", alt.Tooltip("auroc:Q", format=".3f")]
    ).transform_calculate(jitter="(random() - 0.5) * 12")
    return alt.layer(box, pts).properties(width=WIDTH, height=alt.Step(40), title=title)


def score_strip(df: pd.DataFrame, title: str) -> alt.Chart:
    """Max-pooled scores of one concept's examples by category (rows: category, score, example_id)."""
    return alt.Chart(df).mark_tick(thickness=2, size=18).encode(
        x=alt.X("score:Q", title="max-pooled score"), y=alt.Y("category:N", title=None,
                                                              sort=["positive", "negative", "hard_negative"]),
        color=alt.Color("category:N", scale=alt.Scale(domain=["positive", "negative", "hard_negative"],
                                                      range=["#54a24b", "#9d9d9d", "#f58518"]), legend=None),
        tooltip=["example_id:N", "category:N", alt.Tooltip("score:Q", format=".3f")],
    ).properties(width=WIDTH, height=alt.Step(26), title=title)


def cosine_heatmap(df: pd.DataFrame, x: str, y: str, title: str, text: bool = False, size: int = 360) -> alt.Chart:
    """Heatmap of cosine similarities in [-1, 1] (rows: x, y, cosine, plus tooltip columns)."""
    order = sorted(df[x].unique())
    base = alt.Chart(df).encode(x=alt.X(f"{x}:N", sort=order, title=None, axis=alt.Axis(labelAngle=-60)),
                                y=alt.Y(f"{y}:N", sort=order, title=None))
    tips = [c for c in df.columns if c not in ("jitter",)]
    rect = base.mark_rect().encode(color=alt.Color("cosine:Q", scale=alt.Scale(scheme="redblue", domain=[-1, 1],
                                                                               reverse=True)), tooltip=tips)
    chart = rect
    if text:
        chart = alt.layer(rect, base.mark_text(fontSize=11).encode(
            text=alt.Text("cosine:Q", format=".2f"),
            color=alt.condition("abs(datum.cosine) > 0.6", alt.value("white"), alt.value("black"))))
    return chart.properties(width=size, height=size, title=title)


def steering_factor_curves(df: pd.DataFrame, chosen: pd.DataFrame, title: str) -> alt.FacetChart:
    """Mean score vs steering factor per method, one panel per criterion; the modal chosen factor marked.

    ``df`` rows: method, criterion, factor, score; ``chosen`` rows: method, criterion, factor, score (the point at
    the factor chosen most often on the selection split).
    """
    methods = sorted(df["method"].unique().tolist())
    line = alt.Chart(df).mark_line(point=True).encode(
        x=alt.X("factor:Q", title="steering factor"), y=alt.Y("score:Q", title="mean score (0–2)"),
        color=_method_color(methods),
        tooltip=["method:N", "criterion:N", "factor:Q", alt.Tooltip("score:Q", format=".3f")])
    mark = alt.Chart(chosen).mark_point(shape="diamond", size=160, filled=True, stroke="black").encode(
        x="factor:Q", y="score:Q", color=_method_color(methods),
        tooltip=["method:N", "criterion:N", alt.Tooltip("factor:Q", title="chosen factor"),
                 alt.Tooltip("score:Q", format=".3f")])
    return _facet_layers(df, line, mark, title)


def _facet_layers(df: pd.DataFrame, line: alt.Chart, mark: alt.Chart, title: str) -> alt.ConcatChart:
    # layers with different data cannot share a facet, so one panel per criterion, concatenated
    order = ["aggregate", "concept", "instruction", "fluency"]
    panels = []
    for crit in [c for c in order if c in set(df["criterion"])]:
        panels.append(alt.layer(line.transform_filter(alt.datum.criterion == crit),
                                mark.transform_filter(alt.datum.criterion == crit)
                                ).properties(width=260, height=200, title=crit))
    return alt.concat(*panels, columns=2).properties(title=title)


def tradeoff_scatter(df: pd.DataFrame, means: pd.DataFrame, title: str) -> alt.LayerChart:
    """Concept score vs fluency: one small point per (method, concept) at its chosen factor, a large one per method."""
    methods = sorted(df["method"].unique().tolist())
    pts = alt.Chart(df).mark_circle(size=45, opacity=0.45).encode(
        x=alt.X("fluency:Q", scale=alt.Scale(domain=[0, 2]), title="fluency (0–2)"),
        y=alt.Y("concept:Q", scale=alt.Scale(domain=[0, 2]), title="concept score (0–2)"),
        color=_method_color(methods),
        tooltip=["method:N", "concept_id:N", alt.Tooltip("factor:Q", title="chosen factor"),
                 alt.Tooltip("concept:Q", format=".2f"), alt.Tooltip("fluency:Q", format=".2f")])
    big = alt.Chart(means).mark_point(size=220, filled=True, stroke="black", strokeWidth=1).encode(
        x="fluency:Q", y="concept:Q", color=_method_color(methods), shape=alt.Shape("method:N", legend=None),
        tooltip=["method:N", alt.Tooltip("concept:Q", format=".3f"), alt.Tooltip("fluency:Q", format=".3f")])
    return alt.layer(pts, big).properties(width=420, height=380, title=title)

"""`axw report` on a small warehouse built with the tiny model: every page renders, its numbers equal the SQL views,
text from the data is inert, charts are inlined (no network), and the steering page fills from steering views."""

from __future__ import annotations

import html
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from axwarehouse.catalog import Catalog
from conftest import axw, write_release

PAYLOAD_C = '<script>alert("concept")</script>'
PAYLOAD_O = '<script>alert("output")</script>'
METHODS = ("diffmean", "pca", "probe")


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_model_dir):
    """Catalog with import → activations → train → latent on the tiny model, concept names and outputs laced with
    <script> payloads and a javascript: reference; then `axw report`."""
    root = tmp_path_factory.mktemp("rep")
    rel = write_release(root / "release")
    meta = [json.loads(x) for x in (rel / "generate" / "metadata.jsonl").read_text().splitlines()]
    meta[0]["concept_genres_map"] = {f"dates {PAYLOAD_C}": next(iter(meta[0]["concept_genres_map"].values()))}
    meta[0]["concept"] = f"dates {PAYLOAD_C}"
    (rel / "generate" / "metadata.jsonl").write_text("".join(json.dumps(m) + "\n" for m in meta))
    ev = pl.read_parquet(rel / "inference" / "latent_eval_data.parquet")
    first = ev["output"][0]
    ev = ev.with_columns(pl.when(pl.col("output") == first).then(pl.lit(f"{first} {PAYLOAD_O}"))
                         .otherwise(pl.col("output")).alias("output"))
    ev.write_parquet(rel / "inference" / "latent_eval_data.parquet")
    cat_path = root / "wh" / "catalog.duckdb"
    cat_path.parent.mkdir()
    base = ["--catalog", cat_path]
    common = ["-c", "s3", "--model", tiny_model_dir, "--layer", "2"]
    for args in (["import-axbench", rel, "-c", "s3"], ["activations", *common],
                 ["train", *common, *sum([["--method", m] for m in METHODS], [])],
                 ["latent", *common, *sum([["--method", m] for m in METHODS], [])]):
        code, out, err = axw(*base, *args)
        assert code == 0, (args, err)
    out_dir = root / "reports"
    code, out, err = axw(*base, "report", "--out", out_dir)
    assert code == 0, err
    assert "pages" in out
    return cat_path, out_dir


def specs(page: Path) -> dict[str, dict]:
    text = page.read_text()
    found = re.findall(r'<script type="application/json" class="vl-spec" data-target="[^"]+" data-name="([^"]+)">'
                       r"(.*?)</script>", text, flags=re.S)
    return {html.unescape(name): json.loads(body) for name, body in found}


def dataset_with(spec: dict, *columns: str) -> list[dict]:
    """Rows of every inlined dataset that has all ``columns`` (Altair stores data under spec['datasets'], one per
    distinct data frame: concatenated panels each bring their own)."""
    hits = [rows for rows in spec.get("datasets", {}).values() if rows and all(c in rows[0] for c in columns)]
    assert hits, f"no dataset with {columns}"
    return [r for rows in hits for r in rows]


def test_every_page_exists_and_is_offline(built):
    _, out = built
    names = {p.relative_to(out).as_posix() for p in out.rglob("*.html")}
    assert {"index.html", "leaderboard.html", "roc.html", "steering.html", "geometry.html",
            "concepts/s3/0.html", "concepts/s3/1.html", "concepts/s3/2.html"} <= names
    for page in out.rglob("*.html"):
        text = page.read_text()
        assert not re.search(r'<(script|link|img)[^>]+(src|href)="https?:', text), page
        n_specs = text.count('class="vl-spec"')
        if n_specs:  # the Vega runtime is inlined once, the driver embeds each spec
            assert "vegaEmbed" in text and text.count("<script>") == 2
    for img in ("latent_leaderboard", "roc_0", "auroc_distribution_0", "cosine_methods_0"):
        assert (out / "img" / f"{img}.svg").read_text().startswith("<svg")
        assert (out / "img" / f"{img}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_leaderboard_page_matches_views(built):
    cat_path, out = built
    with Catalog(cat_path, read_only=True) as cat:
        view = {m: a for m, a in cat.sql("SELECT method, mean_auroc FROM latent_leaderboard").fetchall()}
        per = {m: np.array(v) for m, v in cat.sql("SELECT method, list(auroc) FROM latent_auroc GROUP BY 1").fetchall()}
    rows = dataset_with(specs(out / "leaderboard.html")["latent_leaderboard"], "method", "mean", "ci_low")
    assert {r["method"] for r in rows} == set(METHODS)
    for r in rows:
        assert r["mean"] == pytest.approx(view[r["method"]], abs=1e-12)
        assert per[r["method"]].min() - 1e-12 <= r["ci_low"] <= r["mean"] <= r["ci_high"] <= per[r["method"]].max() + 1e-12
    text = (out / "leaderboard.html").read_text()
    for m, a in view.items():
        # the page's mean and this one come from two runs of DuckDB's parallel avg, which may differ in the last
        # bit: either rounding of a value within 1e-12 of the view's is the view's number
        assert any(f'<td class="num">{a + d:.3f}</td>' in text for d in (-1e-12, 0.0, 1e-12)), (m, a)
    csv = pl.read_csv(out / "data" / "latent_leaderboard.csv")
    assert dict(zip(csv["method"], csv["mean"])) == pytest.approx(view)


def test_roc_page_matches_views_and_sklearn(built):
    from sklearn.metrics import roc_curve

    cat_path, out = built
    sp = specs(out / "roc.html")
    curves = dataset_with(sp["roc_0"], "concept_id", "fpr", "tpr", "threshold")
    mean = [r for r in sp["roc_0"]["datasets"].values() if r and set(r[0]) == {"method", "fpr", "tpr"}]
    dist = dataset_with(sp["auroc_distribution_0"], "concept_id", "auroc")
    with Catalog(cat_path, read_only=True) as cat:
        n_roc = cat.count("latent_roc")
        mean_view = {(m, round(f, 2)): t for m, f, t in cat.sql("SELECT method, fpr, tpr FROM latent_roc_mean").fetchall()}
        auroc = {(m, c): a for m, c, a in cat.sql("SELECT method, concept_id, auroc FROM latent_auroc").fetchall()}
        labelled = cat.sql("SELECT method, concept_id, list(score), list(label) FROM latent_labelled "
                           "WHERE label IS NOT NULL GROUP BY ALL").fetchall()
        roc_view = cat.sql("SELECT method, concept_id, list(fpr ORDER BY fpr, tpr), list(tpr ORDER BY fpr, tpr) "
                           "FROM latent_roc GROUP BY ALL").fetchall()
    assert len(curves) == n_roc
    assert sum(len(r) for r in mean) == len(mean_view)
    for rows in mean:
        for r in rows:
            assert r["tpr"] == pytest.approx(mean_view[(r["method"], round(r["fpr"], 2))], abs=1e-12)
    assert {(r["method"], r["concept_id"]): r["auroc"] for r in dist} == pytest.approx(auroc)
    # the ROC view draws scikit-learn's curve (all thresholds), per method and concept
    view = {(m, c): (np.array(f), np.array(t)) for m, c, f, t in roc_view}
    grid_means: dict[str, list[np.ndarray]] = {}
    for m, c, scores, labels in labelled:
        fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
        order = np.lexsort((tpr, fpr))
        np.testing.assert_allclose(view[(m, c)][0], fpr[order], atol=1e-12)
        np.testing.assert_allclose(view[(m, c)][1], tpr[order], atol=1e-12)
        grid = np.linspace(0, 1, 101)
        grid_means.setdefault(m, []).append(np.interp(grid, fpr[order], tpr[order]))
    # vertical average = mean of np.interp curves, compared away from any curve's FPR knots (ties are ambiguous)
    knots = {round(f, 9) for f, _ in view.values() for f in f.tolist()}
    for m, curves_m in grid_means.items():
        avg = np.mean(curves_m, axis=0)
        for i, g in enumerate(np.linspace(0, 1, 101)):
            if round(g, 9) not in knots:
                assert mean_view[(m, round(g, 2))] == pytest.approx(avg[i], abs=1e-9)


def test_geometry_page_matches_views(built):
    cat_path, out = built
    sp = specs(out / "geometry.html")
    mm = dataset_with(sp["cosine_methods_0"], "method_a", "method_b", "cosine")
    full = dataset_with(sp["cosine_directions_0"], "direction_a", "direction_b", "cosine")
    with Catalog(cat_path, read_only=True) as cat:
        view = {(a, b): c for a, b, c in cat.sql("SELECT method_a, method_b, avg(cosine) FROM direction_cosine "
                                                  "WHERE concept_a = concept_b GROUP BY ALL").fetchall()}
        dirs = {(m, c): np.array(d) for m, c, d in cat.sql(
            "SELECT method, concept_id, direction FROM method_artifacts").fetchall()}
    assert {(r["method_a"], r["method_b"]): r["cosine"] for r in mm} == pytest.approx(view)
    assert len(full) == len(dirs) ** 2
    for r in full[:50]:  # spot-check against numpy
        (ma, ca), (mb, cb) = [(s.split(" #")[0], int(s.split(" #")[1])) for s in (r["direction_a"], r["direction_b"])]
        a, b = dirs[(ma, ca)], dirs[(mb, cb)]
        assert r["cosine"] == pytest.approx(a @ b / np.linalg.norm(a) / np.linalg.norm(b), abs=1e-5)


def test_concept_page_matches_views(built):
    cat_path, out = built
    with Catalog(cat_path, read_only=True) as cat:
        best, chash = cat.sql("SELECT method, config_hash FROM latent_leaderboard ORDER BY mean_auroc DESC "
                              "LIMIT 1").fetchall()[0]
        ex = cat.sql("SELECT example_id, category, score, token_scores, tokens FROM latent_examples "
                     "WHERE method = ? AND config_hash = ? AND concept_id = 1 "
                     "ORDER BY score DESC NULLS LAST, example_id", [best, chash]).fetchall()
    text = (out / "concepts" / "s3" / "1.html").read_text()
    assert f"highlighted by {best} [{chash}]" in text
    blocks = re.findall(r'<div class="example" data-example="(\d+)">(.*?)</div>', text, flags=re.S)
    n_hard = sum(1 for e in ex if e[1] == "hard_negative")
    # top-10 section, hard negatives section, then every positive and negative: hard negatives show up twice
    assert [int(b[0]) for b in blocks[:10]] == [e[0] for e in ex[:10]]
    assert len(blocks) == min(10, len(ex)) + n_hard + sum(1 for e in ex if e[1] != "hard_negative")
    by_id = {e[0]: e for e in ex}
    for ex_id, body in blocks:
        _, _, _, scores, tokens = by_id[int(ex_id)]
        titles = re.findall(r'<span class="tok" style="[^"]*" title="([^"]+)">', body)
        assert len(tokens) == len(scores) == len(titles)
        assert [float(t) for t in titles] == pytest.approx([round(s, 3) for s in scores], abs=1.5e-3)
    strip = dataset_with(specs(out / "concepts" / "s3" / "1.html")["scores_1"], "example_id", "score")
    assert sorted((r["example_id"], r["score"]) for r in strip) == sorted((e[0], e[2]) for e in ex)


class _Scripts(HTMLParser):
    def __init__(self):
        super().__init__()
        self.scripts: list[tuple[dict, str]] = []
        self._in: dict | None = None
        self.hrefs: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "script":
            self._in = dict(attrs)
            self.scripts.append((self._in, ""))
        if tag == "a":
            self.hrefs.append(dict(attrs).get("href", ""))

    def handle_data(self, data):
        if self._in is not None:
            attrs, body = self.scripts[-1]
            self.scripts[-1] = (attrs, body + data)

    def handle_endtag(self, tag):
        if tag == "script":
            self._in = None


def test_script_text_from_data_is_inert(built):
    from axwarehouse.report.html import vega_bundle

    _, out = built
    seen_c = seen_o = False
    for page in out.rglob("*.html"):
        text = page.read_text()
        assert PAYLOAD_C not in text and PAYLOAD_O not in text
        p = _Scripts()
        p.feed(text)
        for attrs, body in p.scripts:
            if attrs.get("type") == "application/json":
                json.loads(body)  # a data script is pure JSON (nothing broke out of it)
                assert "<" not in body
            else:  # executable scripts are only the inlined Vega runtime and our driver
                assert body == vega_bundle() or body.lstrip().startswith("document.querySelectorAll('script.vl-spec')")
        assert not any(h.lower().startswith("javascript:") for h in p.hrefs)
        seen_c |= html.escape(PAYLOAD_C) in text
        seen_o |= "&lt;" in text and "alert" in text and page.parent.name == "s3"
    assert seen_c and seen_o


def test_steering_page_without_and_with_steering_views(built, tmp_path):
    cat_path, out = built
    assert "No steering data yet" in (out / "steering.html").read_text()
    assert "No steering data yet" in (out / "leaderboard.html").read_text()
    # real steering rows in the base tables (steering_outputs, judge_scores); the real views compute the rest.
    # One rating fails to parse (NULL, parse_ok false): under the default rule (AxBench's) its output scores 0.
    import pyarrow as pa

    rng = np.random.default_rng(0)
    outs, judged, scores = [], [], {}
    for m in ("diffmean", "prompt"):
        for c in range(3):
            for f in (0.5, 1.0, 2.0):
                for i in range(4):
                    oid = f"{m}-{c}-{f}-{i}"
                    split = "selection" if i < 2 else "test"
                    outs.append({"output_id": oid, "method": m, "model": "tiny", "layer": 2, "concept_set": "s3",
                                 "concept_id": c, "factor": f, "input_id": i, "split": split,
                                 "instruction_set": "t", "instruction_id": i, "instruction": "<b>do</b>",
                                 "steering_prompt": None, "magnitude": 1.0, "magnitude_source": "test",
                                 "strength": f, "seed": i, "generation": "<script>alert(1)</script>",
                                 "n_tokens": 5, "finished": True, "method_config_hash": None,
                                 "config_hash": f"st{m[:2]}"})
                    s3 = rng.integers(0, 3, 3).astype(float)
                    failed = (m, c, f, i) == ("diffmean", 1, 1.0, 3)
                    for crit, v in zip(("concept", "instruction", "fluency"), s3):
                        bad = failed and crit == "fluency"
                        judged.append({"output_id": oid, "judge": "embedded:smollm2", "criterion": crit,
                                       "score": None if bad else v, "expected_score": None, "parse_ok": not bad,
                                       "parse_error": "no_rating" if bad else "", "raw": "Rating: [[x]]",
                                       "score_source": None if bad else "parsed",
                                       "request_hash": oid + crit, "rubric": "axw-v1", "config_hash": "j1"})
                    # a failed rating scores 0 (AxBench's rule, the report's default), so the output scores 0
                    scores[(m, c, f, split, i)] = (0.0 if failed else 0.0 if s3.min() == 0
                                                   else 3 / (1 / s3).sum())
    with Catalog(cat_path) as cat, cat.run("test-steering", {"synthetic": True}) as run:
        run.write("steering_outputs", pa.Table.from_pylist(outs))
        run.write("judge_scores", pa.Table.from_pylist(judged))
    # expected leaderboard by hand: best factor on selection (ties -> smallest), test mean there, mean over concepts
    expected = {}
    for m in ("diffmean", "prompt"):
        per_concept = []
        for c in range(3):
            def mean(split, f):
                vals = [v for (mm, cc, ff, sp, _), v in scores.items() if (mm, cc, ff, sp) == (m, c, f, split)
                        and v is not None]
                return sum(vals) / len(vals)
            best = max((0.5, 1.0, 2.0), key=lambda f: (mean("selection", f), -f))
            per_concept.append(mean("test", best))
        expected[m] = sum(per_concept) / 3
    out2 = tmp_path / "rep"
    code, _, err = axw("--catalog", cat_path, "report", "--out", out2, "--no-images")
    assert code == 0, err
    steer = (out2 / "steering.html").read_text()
    assert "No steering data yet" not in steer
    assert "<script>alert(1)</script>" not in steer
    # the page says whose ratings these are (judge_settings' label), and explains the trade-off chart's marks
    assert html.escape("Judge: embedded offline judge smollm2 (not AxBench's gpt-4o-mini) with our rubric "
                       "wording.") in steer
    assert "a small point per concept" in steer
    # and how valid that judge is (never validated here: the line says how to measure it)
    assert html.escape("judge validity embedded:smollm2 on s3: not validated (`axw judge validate -c s3 --judge "
                       "embedded:smollm2`).") in steer
    sp = specs(out2 / "steering.html")
    assert {"steering_factor_0", "steering_tradeoff_0"} <= set(sp)
    curve = dataset_with(sp["steering_factor_0"], "criterion", "factor", "score")
    assert {r["criterion"] for r in curve} == {"aggregate", "concept", "instruction", "fluency"}
    lb = dataset_with(specs(out2 / "leaderboard.html")["steering_leaderboard"], "method", "mean")
    assert {r["method"]: r["mean"] for r in lb} == pytest.approx(expected, abs=1e-12)
    code, cmp_out, err = axw("--catalog", cat_path, "compare", "diffmean", "prompt", "--metric", "steering")
    assert code == 0, err
    assert "paired tests" in cmp_out
    with Catalog(cat_path) as cat:
        cat.delete_where("judge_scores", "true")
        cat.delete_where("steering_outputs", "true")


def test_report_bad_input(built, tmp_path):
    cat_path, _ = built
    code, _, err = axw("--catalog", cat_path, "report", "--out", tmp_path / "x", "--method", "nosuch")
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
    f = tmp_path / "file"
    f.write_text("keep")
    code, _, err = axw("--catalog", cat_path, "report", "--out", f)
    assert code == 2 and f.read_text() == "keep"

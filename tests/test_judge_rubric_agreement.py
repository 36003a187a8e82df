"""`axw judge --rubric-from` (AxBench's templates read from a checkout as data, never executed), the judge labels,
and the `judge_agreement` view / `axw judge compare` checked against scipy and scikit-learn on a hand-built case.

The steering outputs are written straight into the base tables (no model needed); the judge is a real
chat-completions server on 127.0.0.1."""

from __future__ import annotations

import csv
import io

import pyarrow as pa
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import cohen_kappa_score

from axwarehouse.catalog import Catalog
from axwarehouse.llm.fake_server import FakeChatServer
from axwarehouse.judging.rubric import AXBENCH_NAMES, read_axbench_rubric
from conftest import axw
from steered_rows import steered_outputs

# A fixture in the layout of AxBench's axbench/evaluators/prompt_templates.py, with our own made-up wording. The
# line that writes a file proves the module is never executed; the non-literal assignment is simply not read.
TEMPLATES = {
    "concept": "[Sys]\nIs the idea below in the snippet? Reply 0-2. Rating: [[score]]\n<<{concept}>>\n<<{sentence}>>\n",
    "instruction": "[Sys]\nDoes the snippet follow the request? 0-2.\nRequest: {instruction}\nSnippet: {sentence}\n",
    "fluency": "[Sys]\nHow fluent is this snippet, 0-2?\n{sentence}\nEnd.\n",
}


def write_checkout(root, templates=TEMPLATES, extra: str = "") -> None:
    folder = root / "axbench" / "evaluators"
    folder.mkdir(parents=True)
    body = [f"import pathlib\npathlib.Path({str(root / 'EXECUTED')!r}).write_text('ran')\n",
            "OTHER = 'x' + 'y'\n"]
    body += [f"{AXBENCH_NAMES[c]} = {t!r}\n\n" for c, t in templates.items()]
    (folder / "prompt_templates.py").write_text("".join(body) + extra)


def _outputs(cat_path, n: int = 4) -> list[str]:
    """n steered outputs of concept 0 of set s (selection and test), written straight into the base tables."""
    outs = steered_outputs("s", n)
    with Catalog(cat_path) as cat, cat.run("test-steering", {}) as run:
        run.write("concepts", pa.Table.from_pylist([{
            "concept_set": "s", "concept_id": 0, "concept": "ocean waves", "genre": "text", "genres": ["text"],
            "ref": None, "sae_id": None, "source": "test", "source_hash": "h"}]))
        run.write("steering_outputs", pa.Table.from_pylist(outs))
    return [o["output_id"] for o in outs]


def test_rubric_from_reads_the_templates_as_data_and_uses_them_verbatim(tmp_path, catalog_path):
    write_checkout(tmp_path / "ax")
    rubric = read_axbench_rubric(tmp_path / "ax")
    assert rubric.templates == TEMPLATES and rubric.name.startswith("axbench:") and len(rubric.name) == 20
    assert not (tmp_path / "ax" / "EXECUTED").exists()  # parsed, never imported
    # the file itself and the package folder work too, and name the same rubric
    assert read_axbench_rubric(tmp_path / "ax" / "axbench" / "evaluators" / "prompt_templates.py") == rubric
    assert read_axbench_rubric(tmp_path / "ax" / "axbench").name == rubric.name

    catalog_path.parent.mkdir(parents=True)
    _outputs(catalog_path)
    with FakeChatServer(responder=lambda body: "Fine.\nRating: [[2]]") as srv:
        judge = ["--catalog", catalog_path, "judge", "--judge", "openai-compatible:fj", "--judge-base-url",
                 srv.base_url, "--no-progress", "--no-perplexity"]
        code, out, err = axw(*judge, "--rubric-from", tmp_path / "ax")
        assert code == 0, err
        sent = sorted(r.body["messages"][-1]["content"] for r in srv.requests)
        n_axbench = len(srv.requests)
        code, out2, err = axw(*judge)  # our rubric: a separate judge config, every output rated again
        assert code == 0, err
        ours_sent = [r.body["messages"][-1]["content"] for r in srv.requests[n_axbench:]]
    want = sorted(TEMPLATES[c].format(concept="ocean waves", instruction=f"Say thing {i}.",
                                      sentence=f"generated text {i}") for i in range(4) for c in TEMPLATES)
    assert sent == want  # verbatim, placeholders filled, nothing added
    assert f"rubric {rubric.name}" in out and "rubric axw-v1" in out2
    assert len(ours_sent) == 12 and not set(ours_sent) & set(sent)
    assert not (tmp_path / "ax" / "EXECUTED").exists()
    with Catalog(catalog_path, read_only=True) as cat:
        by_rubric = dict(cat.sql("SELECT rubric, count(DISTINCT config_hash) FROM judge_scores GROUP BY 1").fetchall())
        notes = dict(cat.sql("SELECT rubric, judge_note FROM steering_leaderboard "
                             "WHERE judge_failures = 'zero'").fetchall())
        source = cat.sql("SELECT rubric_source FROM judge_configs WHERE rubric = ?", [rubric.name]).fetchall()
    assert by_rubric == {rubric.name: 1, "axw-v1": 1}
    assert notes == {rubric.name: "openai-compatible:fj (not AxBench's gpt-4o-mini) with AxBench's rubric (read "
                                  "from a checkout); failed ratings scored 0 (AxBench's rule)",
                     "axw-v1": "openai-compatible:fj (not AxBench's gpt-4o-mini) with our rubric wording; "
                               "failed ratings scored 0 (AxBench's rule)"}
    assert source == [(str((tmp_path / "ax" / "axbench" / "evaluators" / "prompt_templates.py").resolve()),)]


@pytest.mark.parametrize("case, message", [
    ("missing", "no axbench/evaluators/prompt_templates.py there"),
    ("not_literal", "is not a plain string literal"),
    ("placeholder", "has placeholders ['sentence']; expected ['concept', 'sentence']"),
    ("absent_name", "missing UNIDIRECTIONAL_PAIRWISE_EVALUATION_FLUENCY_TEMPLATE"),
    ("syntax", "cannot parse as Python source"),
])
def test_rubric_from_bad_checkouts_are_one_line_errors(tmp_path, catalog_path, case, message):
    root = tmp_path / "ax"
    if case == "not_literal":
        write_checkout(root, extra=f"{AXBENCH_NAMES['fluency']} = 'a {{sentence}}' + 'b'\n")
    elif case == "placeholder":
        write_checkout(root, {**TEMPLATES, "concept": "No concept here: {sentence}"})
    elif case == "absent_name":
        write_checkout(root, {c: t for c, t in TEMPLATES.items() if c != "fluency"})
    elif case == "syntax":
        write_checkout(root, extra="def broken(:\n")
    catalog_path.parent.mkdir(parents=True)
    _outputs(catalog_path)
    code, out, err = axw("--catalog", catalog_path, "judge", "--judge", "openai-compatible:fj", "--judge-base-url",
                         "http://127.0.0.1:9/v1", "--no-progress", "--no-perplexity", "--rubric-from", root)
    assert code != 0 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (root / "EXECUTED").exists()
    with Catalog(catalog_path, read_only=True) as cat:
        assert cat.count("judge_scores") == 0


def _ratings(outputs, judge, jhash, rubric, table):
    return [{"output_id": o, "judge": judge, "criterion": crit, "score": s, "score_source": None if s is None
             else "parsed", "expected_score": None, "parse_ok": s is not None,
             "parse_error": "no_rating" if s is None else None, "raw": "x", "request_hash": f"{judge}{o}{crit}",
             "rubric": rubric, "config_hash": jhash}
            for crit, scores in table.items() for o, s in zip(outputs, scores)]


# hand-built ratings of 10 outputs by two judges: ties on both sides, one failed rating (NULL) by judge B
A_CONCEPT = [0, 1, 2, 2, 1, 0, 2, 1, 1, 2]
B_CONCEPT = [0, 2, 2, 1, 1, 0, 2, 0, None, 2]
A_FLUENCY = [2, 2, 1, 1, 0, 2, 2, 1, 0, 1]
B_FLUENCY = [1, 2, 1, 0, 0, 2, 2, 2, 1, 1]


def test_judge_agreement_matches_scipy_and_sklearn(catalog_path):
    catalog_path.parent.mkdir(parents=True)
    outs = _outputs(catalog_path, n=10)
    rows = (_ratings(outs, "openai:gpt-4o-mini", "hA", None, {"concept": A_CONCEPT, "fluency": A_FLUENCY})
            + _ratings(outs, "embedded:smollm2", "hB", "axw-v1", {"concept": B_CONCEPT, "fluency": B_FLUENCY})
            # the same embedded judge under other settings rated only 3 outputs: a second config of that judge
            + _ratings(outs[:3], "embedded:smollm2", "hC", "axw-v1", {"concept": [2, 2, 2]}))
    with Catalog(catalog_path) as cat, cat.run("test-judge", {}) as run:
        run.write("judge_scores", pa.Table.from_pylist(rows))

    def expected(a, b, rule):
        """(n, Spearman, Cohen's kappa) by scipy/sklearn; a failed rating (None) is 0 or left out."""
        fix = (lambda v: 0 if v is None else v) if rule == "zero" else (lambda v: v)
        pairs = [(fix(x), fix(y)) for x, y in zip(a, b)]
        pairs = [(x, y) for x, y in pairs if x is not None and y is not None]
        xs, ys = [p[0] for p in pairs], [p[1] for p in pairs]
        return len(pairs), spearmanr(xs, ys).statistic, cohen_kappa_score(xs, ys)

    with Catalog(catalog_path, read_only=True) as cat:
        view = {(c, r): (n, s, k) for c, r, n, s, k in cat.sql(
            "SELECT criterion, judge_failures, n, spearman, kappa FROM judge_agreement "
            "WHERE judge_a = 'embedded:smollm2' AND judge_config_hash_a = 'hB' AND judge_b = 'openai:gpt-4o-mini'"
        ).fetchall()}
        labels = dict(cat.sql("SELECT judge || '@' || judge_config_hash, judge_label FROM judge_settings").fetchall())
    # side a of the view is the pair member that sorts first: embedded:smollm2 (B) before openai:gpt-4o-mini (A)
    for rule in ("zero", "drop"):
        for crit, a, b in (("concept", A_CONCEPT, B_CONCEPT), ("fluency", A_FLUENCY, B_FLUENCY)):
            n, s, k = expected(b, a, rule)  # the view's side a is judge B
            assert view[(crit, rule)][0] == n
            assert view[(crit, rule)][1] == pytest.approx(s, abs=1e-12)
            assert view[(crit, rule)][2] == pytest.approx(k, abs=1e-12)
    assert view[("concept", "zero")][0] == 10 and view[("concept", "drop")][0] == 9
    assert view[("concept", "zero")][2] != pytest.approx(view[("concept", "drop")][2], abs=1e-6)
    assert labels == {"openai:gpt-4o-mini@hA": "gpt-4o-mini (AxBench's judge model) with our rubric wording, not "
                                               "AxBench's",
                      "embedded:smollm2@hB": "embedded offline judge smollm2 (not AxBench's gpt-4o-mini) with our "
                                             "rubric wording",
                      "embedded:smollm2@hC": "embedded offline judge smollm2 (not AxBench's gpt-4o-mini) with our "
                                             "rubric wording"}

    # axw judge compare A B: oriented as asked, per criterion, under the chosen rule
    code, out, err = axw("--catalog", catalog_path, "judge", "compare", "openai:gpt-4o-mini", "embedded:smollm2@hB",
                         "--format", "csv", "--judge-failures", "drop")
    assert code == 0, err
    header, body = out.split("\n", 1)
    assert header.startswith("A = openai:gpt-4o-mini@hA  vs  B = embedded:smollm2@hB; failed ratings left out")
    got = {r["criterion"]: r for r in csv.DictReader(io.StringIO(body))}
    assert list(got) == ["concept", "fluency"]
    n, s, k = expected(A_CONCEPT, B_CONCEPT, "drop")
    assert int(got["concept"]["n"]) == n and float(got["concept"]["spearman"]) == pytest.approx(s, abs=1e-9)
    assert float(got["concept"]["kappa"]) == pytest.approx(k, abs=1e-9)
    shared = [i for i, v in enumerate(B_CONCEPT) if v is not None]  # means over the outputs both rated
    assert float(got["concept"]["mean_a"]) == pytest.approx(sum(A_CONCEPT[i] for i in shared) / 9)
    assert float(got["concept"]["mean_b"]) == pytest.approx(sum(B_CONCEPT[i] for i in shared) / 9)
    # errors: an ambiguous judge (two configs), an unknown judge, the same config twice
    for args, message in ((("openai:gpt-4o-mini", "embedded:smollm2"), "rated with 2 configs"),
                          (("openai:gpt-4o-mini", "embedded:nope"), "no ratings by judge 'embedded:nope'"),
                          (("embedded:smollm2@hB", "embedded:smollm2@hB"), "are the same judge config")):
        code, out, err = axw("--catalog", catalog_path, "judge", "compare", *args)
        assert code != 0 and message in err and len(err.strip().splitlines()) == 1, (args, err)


def test_proxy_and_axbench_labels(catalog_path):
    """The label says what judged: the proxy judge's wording is fixed; gpt-4o-mini is AxBench's judge only with
    AxBench's own rubric."""
    catalog_path.parent.mkdir(parents=True)
    outs = _outputs(catalog_path, n=2)
    rows = (_ratings(outs, "proxy:embedded:smollm2", "hP", "proxy-v1", {"concept": [1, 2]})
            + _ratings(outs, "openai:gpt-4o-mini", "hX", "axbench:0123456789ab", {"concept": [1, 2]}))
    with Catalog(catalog_path) as cat, cat.run("test-judge", {}) as run:
        run.write("judge_scores", pa.Table.from_pylist(rows))
    with Catalog(catalog_path, read_only=True) as cat:
        labels = dict(cat.sql("SELECT judge, judge_label FROM judge_settings").fetchall())
    assert labels == {"proxy:embedded:smollm2": "proxy judge (offline, not AxBench's LLM judge)",
                      "openai:gpt-4o-mini": "AxBench's judge: gpt-4o-mini with AxBench's rubric (read from a "
                                            "checkout)"}


def test_report_groups_each_judge_config_apart():
    """Two configs of one judge are separate report groups (named by their hash); a single config keeps the name."""
    import pandas as pd

    from axwarehouse.report.steering_pages import _group_label

    df = pd.DataFrame({"concept_set": ["s"] * 3, "model": ["m"] * 3, "layer": [2] * 3,
                       "judge": ["openai:gpt-4o-mini", "openai:gpt-4o-mini", "embedded:smollm2"],
                       "judge_config_hash": ["aaaaaaaa11", "bbbbbbbb22", "cccccccc33"]})
    assert _group_label(df).tolist() == ["s · m · L2 · judged by openai:gpt-4o-mini@aaaaaaaa",
                                         "s · m · L2 · judged by openai:gpt-4o-mini@bbbbbbbb",
                                         "s · m · L2 · judged by embedded:smollm2"]

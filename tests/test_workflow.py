"""`axw status` (missing, stale config/code, next commands), `axw compare` (paired tests) and `axw export`."""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl
import pytest

from axwarehouse.catalog import Catalog
from conftest import axw, tree_state


@pytest.fixture(scope="module")
def wh(tmp_path_factory, tiny_model_dir):
    from conftest import write_release

    root = tmp_path_factory.mktemp("wf")
    rel = write_release(root / "release")
    cat_path = root / "wh" / "catalog.duckdb"
    cat_path.parent.mkdir()
    common = ["-c", "s3", "--model", tiny_model_dir, "--layer", "2"]
    assert axw("--catalog", cat_path, "import-axbench", rel, "-c", "s3")[0] == 0
    return cat_path, common


def test_status_walks_the_workflow(wh, monkeypatch):
    cat_path, common = wh
    code, out, _ = axw("--catalog", cat_path, "status")
    assert code == 0 and "activations: none yet" in out and "axw activations -c s3" in out
    assert axw("--catalog", cat_path, "activations", *common)[0] == 0
    code, out, _ = axw("--catalog", cat_path, "status")
    assert "methods: none trained yet" in out and "axw train -c s3" in out
    assert axw("--catalog", cat_path, "train", *common, "--method", "diffmean", "--method", "pca")[0] == 0
    code, out, _ = axw("--catalog", cat_path, "status")
    nxt = out.split("next (what `axw run` would do, in order):")[1]
    assert "MISSING latent scores for 3 concepts (0, 1, 2)" in out
    assert "axw latent" in nxt and "--method diffmean" in nxt and "--method pca" in nxt
    assert axw("--catalog", cat_path, "latent", *common, "--method", "diffmean", "--method", "pca")[0] == 0
    code, out, _ = axw("--catalog", cat_path, "status")
    assert "3 trained, 3 scored, up to date" in out and "next: nothing to do" in out

    # config change: PCA's settings now hash differently -> stale, and training again is the next step
    from axwarehouse.methods import get

    pca = get("pca")

    @dataclasses.dataclass(frozen=True)
    class NewConfig:
        n_components: int = 3

    monkeypatch.setattr(pca, "Config", NewConfig)
    code, out, _ = axw("--catalog", cat_path, "status")
    line = next(x for x in out.splitlines() if x.strip().startswith("pca"))
    assert "STALE config" in line and "axw train" in out.split("next")[1]
    assert "STALE config" not in next(x for x in out.splitlines() if x.strip().startswith("diffmean"))


def test_status_flags_artifacts_of_an_older_method_file(wh, monkeypatch):
    """Artifacts recorded with another source hash of their method file are stale; --replace is the next step."""
    from axwarehouse.methods import get

    cat_path, common = wh
    assert axw("--catalog", cat_path, "activations", *common)[0] == 0
    monkeypatch.setattr(get("probe"), "source_hash", classmethod(lambda cls: "0ld0ld0ld0ld"))
    assert axw("--catalog", cat_path, "train", *common, "--method", "probe")[0] == 0
    monkeypatch.undo()
    code, out, _ = axw("--catalog", cat_path, "status")
    line = next(x for x in out.splitlines() if x.strip().startswith("probe"))
    assert "STALE code: trained by an older version of axwarehouse/methods/probe.py" in line
    nxt = out.split("next (what `axw run` would do, in order):")[1]
    assert "--method probe --replace" in nxt
    assert axw("--catalog", cat_path, "train", *common, "--method", "probe", "--replace")[0] == 0
    assert axw("--catalog", cat_path, "latent", *common, "--method", "probe")[0] == 0
    line = next(x for x in axw("--catalog", cat_path, "status")[1].splitlines() if x.strip().startswith("probe"))
    assert line.endswith("up to date")


def test_status_judges_set_rows_by_their_own_settings(wh, monkeypatch):
    """Rows trained with --set are current when the defaults *with those settings* hash the same, and a method's
    concept limit is read with them (sft.max_concepts=1 trains one concept: nothing is missing)."""
    cat_path, common = wh
    assert axw("--catalog", cat_path, "activations", *common)[0] == 0
    probe = ["--method", "probe", "--set", "probe.epochs=2"]
    assert axw("--catalog", cat_path, "train", *common, *probe)[0] == 0
    assert axw("--catalog", cat_path, "latent", *common, *probe)[0] == 0
    code, out, err = axw("--catalog", cat_path, "train", *common, "--method", "sft", "--set", "sft.max_concepts=1",
                         "--set", "sft.epochs=1", "--set", "sft.batch_size=4")
    assert code == 0, err
    code, out, _ = axw("--catalog", cat_path, "status")
    lines = out.splitlines()
    probe_line = next(x for x in lines if x.strip().startswith("probe probe.epochs=2"))
    sft_line = next(x for x in lines if x.strip().startswith("sft "))
    assert probe_line.endswith("3 trained, 3 scored, up to date"), probe_line
    assert "sft.max_concepts=1" in sft_line and sft_line.endswith("1 trained, steering only, up to date"), sft_line
    assert "--set" not in out.split("next")[-1]

    # a default changes: the --set rows are stale, and the next command keeps their settings
    from axwarehouse.methods import get

    cls = get("probe")
    monkeypatch.setattr(cls, "Config", dataclasses.make_dataclass(
        "Config", [(f.name, f.type, dataclasses.field(default=f.default)) for f in dataclasses.fields(cls.Config)
                   if f.name != "lr"] + [("lr", float, dataclasses.field(default=1e-3))], frozen=True))
    code, out, _ = axw("--catalog", cat_path, "status")
    probe_line = next(x for x in out.splitlines() if x.strip().startswith("probe probe.epochs=2"))
    assert "STALE config" in probe_line
    assert "--method probe --set probe.epochs=2" in out.split("next (what `axw run` would do, in order):")[1]
    # `axw run` trains and scores the current settings; the old rows stay, marked superseded, and nothing is left
    code, out, err = axw("--catalog", cat_path, "run")
    assert code == 0 and "$ axw train" in out and "--set probe.epochs=2" in out and "commands run" in out, (out, err)
    code, out, _ = axw("--catalog", cat_path, "status")
    probe_lines = [x for x in out.splitlines() if x.strip().startswith("probe probe.epochs=2")]
    assert len(probe_lines) == 2 and sum("superseded by" in x for x in probe_lines) == 1, probe_lines
    assert sum(x.endswith("3 trained, 3 scored, up to date") for x in probe_lines) == 1, probe_lines
    assert "next: nothing to do" in out, out
    # a gap in the superseded rows is shown but not listed: `axw train` would train the current settings, not them
    old = next(x for x in probe_lines if "superseded by" in x).split("[")[1].split("]")[0]
    with Catalog(cat_path) as cat:
        assert cat.delete_where("method_artifacts", "method = 'probe' AND config_hash = ? AND concept_id = 0",
                                [old]) == 1
    code, out, _ = axw("--catalog", cat_path, "status")
    line = next(x for x in out.splitlines() if f"[{old}]" in x)
    assert "MISSING artifacts for 1 concepts (0)" in line and "superseded by" in line, line
    assert "next: nothing to do" in out, out


def test_code_change_compares_git_history():
    """Rows without a source hash fall back to git: the repository's first commit predates every method file; a
    commit the checkout does not have is reported as not comparable."""
    import subprocess

    from axwarehouse.staleness import REPO_ROOT, code_change, commit_of

    assert commit_of("0.1.0+b4a42b9-dirty") == "b4a42b9" and commit_of("0.1.0") is None
    roots = subprocess.run(["git", "rev-list", "--max-parents=0", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                           text=True)
    if roots.returncode != 0:
        pytest.skip("not a git checkout")
    first = roots.stdout.split()[0][:7]
    note = code_change(f"0.1.0+{first}", "train", "pca", method_only=True)
    assert note == f"code changed since {first}: axwarehouse/methods/pca.py"
    note = code_change("0.1.0+0000000", "train", "pca", method_only=True)  # not in this history
    assert note is not None and "cannot compare" in note


def _trained(wh):
    cat_path, common = wh
    for m in ("diffmean", "pca"):
        assert axw("--catalog", cat_path, "activations", *common)[0] == 0
        assert axw("--catalog", cat_path, "train", *common, "--method", m)[0] == 0
        assert axw("--catalog", cat_path, "latent", *common, "--method", m)[0] == 0
    return cat_path


def test_compare_matches_scipy(tiny_warehouse):
    """Its own warehouse: the run-prefix checks need runs that scored one method each, which the module's shared
    warehouse cannot promise once another test has scored several methods in one run."""
    from scipy import stats

    cat_path = _trained(tiny_warehouse)
    with Catalog(cat_path, read_only=True) as cat:
        a = dict(cat.sql("SELECT concept_id, auroc FROM latent_auroc WHERE method = 'diffmean'").fetchall())
        b = dict(cat.sql("SELECT concept_id, auroc FROM latent_auroc WHERE method = 'pca'").fetchall())
        run_pca = cat.sql("SELECT DISTINCT run_id FROM latent_scores WHERE method = 'pca'").fetchall()[0][0]
    code, out, err = axw("--catalog", cat_path, "compare", "diffmean", "pca", "--format", "csv")
    assert code == 0, err
    got = pl.read_csv(out.encode())
    ids = sorted(a)
    assert got["concept_id"].to_list() == ids
    assert got["delta"].to_list() == pytest.approx([b[i] - a[i] for i in ids], abs=1e-12)
    d = np.array([b[i] - a[i] for i in ids])
    assert f"mean delta (B - A) {d.mean():+.4f}" in err
    nz = d[np.abs(d) > 1e-9]
    assert len(nz) > 0  # two different methods on a random model: some concept differs
    assert f"Wilcoxon signed-rank p = {stats.wilcoxon(nz).pvalue:.4g}" in err
    # a run id prefix selects the rows that run wrote (that run scored only pca)
    code, by_run, err = axw("--catalog", cat_path, "compare", "diffmean", run_pca[:8], "--format", "csv")
    assert code == 0, err
    assert by_run == out
    _, common = tiny_warehouse
    assert axw("--catalog", cat_path, "train", *common, "--method", "lat")[0] == 0
    assert axw("--catalog", cat_path, "latent", *common, "--method", "lat")[0] == 0
    with Catalog(cat_path, read_only=True) as cat:
        run_lat = cat.sql("SELECT DISTINCT run_id FROM latent_scores WHERE method = 'lat'").fetchall()[0][0]
    code, by_run, err = axw("--catalog", cat_path, "compare", "diffmean", run_lat[:8], "--format", "csv")
    assert code == 0, err
    assert by_run == axw("--catalog", cat_path, "compare", "diffmean", "lat", "--format", "csv")[1]
    code, _, err = axw("--catalog", cat_path, "compare", "diffmean", "nosuch")
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1


def test_compare_by_a_run_that_scored_two_methods_is_ambiguous(tiny_warehouse):
    path, common = tiny_warehouse
    two = ["--method", "diffmean", "--method", "pca"]
    assert axw("--catalog", path, "train", *common, *two)[0] == 0
    assert axw("--catalog", path, "latent", *common, *two)[0] == 0  # one run scores both
    with Catalog(path, read_only=True) as cat:
        runs = cat.sql("SELECT DISTINCT run_id FROM latent_scores").fetchall()
    assert len(runs) == 1
    code, _, err = axw("--catalog", path, "compare", "diffmean", runs[0][0][:8])
    assert code == 2 and "scored configs" in err and "Pin one with METHOD@HASH" in err, err


def test_paired_test_and_bootstrap():
    from scipy import stats

    from axwarehouse.report.stats import bootstrap_mean_ci, paired_test

    rng = np.random.default_rng(1)
    v = rng.normal(0.8, 0.1, 60)
    lo, hi = bootstrap_mean_ci(v)
    ref = stats.bootstrap((v,), np.mean, method="percentile", n_resamples=4000, random_state=2).confidence_interval
    assert lo < v.mean() < hi
    assert lo == pytest.approx(ref.low, abs=0.01) and hi == pytest.approx(ref.high, abs=0.01)
    assert bootstrap_mean_ci(v) == (lo, hi)  # seeded: the same pages every run
    assert bootstrap_mean_ci(np.full(5, 0.7)) == pytest.approx((0.7, 0.7))
    a, b = v, v + rng.normal(0.05, 0.02, 60)
    t = paired_test(a, b)
    assert t.wins + t.losses + t.ties == 60 and t.mean_delta == pytest.approx((b - a).mean())
    assert t.wilcoxon_p == pytest.approx(stats.wilcoxon(b - a).pvalue)
    assert t.t_p == pytest.approx(stats.ttest_rel(b, a).pvalue) and t.t_p < 1e-6
    assert paired_test(a, a).ties == 60 and paired_test(a, a).wilcoxon_p == 1.0


def test_export_parquet_and_csv_round_trip(wh, tmp_path):
    cat_path = _trained(wh)
    with Catalog(cat_path, read_only=True) as cat:
        ref = pl.from_arrow(cat.arrow("SELECT * FROM latent_auroc ORDER BY method, config_hash, concept_id"))
    for fmt in ("parquet", "csv"):
        path = tmp_path / f"auroc.{fmt}"
        code, out, err = axw("--catalog", cat_path, "export", "latent_auroc", "--format", fmt, "--out", path)
        assert code == 0, err
        assert f"exported {ref.height} rows" in out
        got = (pl.read_parquet(path) if fmt == "parquet" else pl.read_csv(path)).sort(["method", "config_hash", "concept_id"])
        assert got.columns == ref.columns
        assert got["auroc"].to_list() == pytest.approx(ref["auroc"].to_list(), abs=1e-12)
    path = tmp_path / "auroc.csv"
    before = tree_state(tmp_path)
    code, _, err = axw("--catalog", cat_path, "export", "latent_auroc", "--format", "csv", "--out", path)
    assert code == 2 and "exists" in err and tree_state(tmp_path) == before
    code, _, err = axw("--catalog", cat_path, "export", "no_such_view", "--out", tmp_path / "x.parquet")
    assert code == 2 and "no view or table" in err and not (tmp_path / "x.parquet").exists()
    code, out, _ = axw("--catalog", cat_path, "export", "latent_scores", "--where", "method = 'pca'",
                       "--out", tmp_path / "pca.parquet")
    assert code == 0 and set(pl.read_parquet(tmp_path / "pca.parquet")["method"]) == {"pca"}


def test_run_does_what_status_lists(tiny_warehouse):
    """`axw run` executes the next commands of `axw status` until none is left; a second run does nothing."""
    cat_path, common = tiny_warehouse
    assert axw("--catalog", cat_path, "train", *common, "--method", "diffmean", "--method", "pca")[0] == 0
    code, out, err = axw("--catalog", cat_path, "run", "--dry-run")
    assert code == 0 and [line.split("--method ")[1] for line in out.splitlines()] == ["diffmean", "pca"], out
    assert all(line.startswith("axw latent -c s3") for line in out.splitlines())
    code, out, err = axw("--catalog", cat_path, "run")
    assert code == 0, err
    assert out.count("$ axw latent") == 2 and "latent diffmean: 3 concepts" in out and "up to date: 2 commands run" in out
    with Catalog(cat_path, read_only=True) as cat:
        scored = dict(cat.sql("SELECT method, count(DISTINCT concept_id) FROM latent_scores GROUP BY 1").fetchall())
    assert scored == {"diffmean": 3, "pca": 3}
    before = tree_state(cat_path.parent / "warehouse")
    code, out, _ = axw("--catalog", cat_path, "run")
    assert code == 0 and out.strip() == "up to date: nothing to do"
    assert tree_state(cat_path.parent / "warehouse") == before


def test_run_on_an_empty_catalog_names_the_manual_step(tmp_path):
    cat_path = tmp_path / "wh" / "catalog.duckdb"
    cat_path.parent.mkdir()
    Catalog(cat_path).close()  # a catalog without any concept set
    code, out, err = axw("--catalog", cat_path, "run")
    assert code == 2 and err.startswith("error: `axw run` cannot do this step itself: axw import-axbench DIR"), err


def test_run_executes_argument_lists_a_quote_survives(tmp_path, small_release, tiny_model_dir):
    """Status's next steps are argument lists: a model folder named with a ' and a space is shown shell-quoted (the
    line splits back into the same arguments) and `axw run` executes the step as built, not re-parsed text."""
    import shlex
    import shutil

    model = tmp_path / "bob's models" / "tiny"
    shutil.copytree(tiny_model_dir, model)
    cat_path = tmp_path / "wh" / "catalog.duckdb"
    cat_path.parent.mkdir()
    assert axw("--catalog", cat_path, "import-axbench", small_release, "-c", "s3")[0] == 0
    common = ["-c", "s3", "--model", str(model.resolve()), "--layer", "2"]
    code, _, err = axw("--catalog", cat_path, "activations", *common)
    assert code == 0, err
    assert axw("--catalog", cat_path, "train", *common, "--method", "diffmean")[0] == 0
    code, out, err = axw("--catalog", cat_path, "run", "--dry-run")
    expected = ["axw", "latent", *common, "--method", "diffmean"]
    assert code == 0 and out.strip() == shlex.join(expected), (out, err)
    assert shlex.split(out.strip()) == expected
    code, out, _ = axw("--catalog", cat_path, "status")
    assert f"  {shlex.join(expected)}" in out.splitlines()
    code, out, err = axw("--catalog", cat_path, "run")
    assert code == 0 and "up to date: 1 commands run" in out, (out, err)
    with Catalog(cat_path, read_only=True) as cat:
        assert cat.sql("SELECT DISTINCT model, method FROM latent_scores").fetchall() == [(str(model.resolve()),
                                                                                          "diffmean")]

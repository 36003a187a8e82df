"""catalog.duckdb opens in the DuckDB clients users have, not only in the one the project depends on: the DuckDB
CLI 1.5 (the `duckdb-cli` package of the `test` extra) reads a freshly built catalog from its folder and, with
`file_search_path`, from anywhere; and README's notebook snippet runs as printed there."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
from pathlib import Path

import duckdb
import pytest

from conftest import REPO, axw

from axwarehouse.catalog import Catalog

LATENT = "SELECT method, n_concepts, mean_auroc FROM latent_leaderboard ORDER BY method"
STEERING = "SELECT * FROM steering_leaderboard"
# a table joined with a view: each concept's name beside its AUROC
JOIN = ("SELECT a.method, c.concept_id, c.concept, a.auroc FROM concepts AS c "
        "JOIN latent_auroc AS a USING (concept_set, concept_id) ORDER BY a.method, c.concept_id")


def _old_cli() -> Path:
    """The DuckDB 1.x CLI binary that the `duckdb-cli` package ships (not the `duckdb` on PATH, whatever that is)."""
    spec = importlib.util.find_spec("duckdb_cli")
    assert spec is not None and spec.origin, "duckdb-cli is not installed: pip install -e '.[test]'"
    exe = Path(spec.origin).parent / "duckdb"
    version = subprocess.run([exe, "-version"], capture_output=True, text=True, timeout=60).stdout
    assert version.startswith("v1."), version  # older than the Python duckdb (2.x) that writes the catalog
    assert duckdb.__version__.startswith("2."), duckdb.__version__
    return exe


def _old_query(exe: Path, catalog: str, sql: str, cwd: Path, search_path: Path | None = None) -> list[dict]:
    args = [str(exe), "-init", os.devnull, "-readonly", "-json"]  # no ~/.duckdbrc: the output is the query's alone
    if search_path is not None:
        args += ["-cmd", f"SET file_search_path = '{search_path}'"]
    res = subprocess.run([*args, catalog, "-c", sql], capture_output=True, text=True, cwd=cwd, timeout=120)
    assert res.returncode == 0 and not res.stderr, res.stderr
    return json.loads(res.stdout) if res.stdout.strip() else []


@pytest.fixture
def scored(tiny_warehouse) -> Path:
    """The tiny warehouse with DiffMean and PCA trained and latent-scored (3 concepts); its catalog path."""
    catalog, common = tiny_warehouse
    for stage in ("train", "latent"):
        code, _, err = axw("--catalog", catalog, stage, *common, "--method", "diffmean", "--method", "pca")
        assert code == 0, err
    return catalog


def test_duckdb_1x_cli_runs_the_leaderboards_from_the_folder_and_from_elsewhere(scored, tmp_path):
    exe = _old_cli()
    with Catalog(scored, read_only=True) as cat:
        latent = cat.con.sql(LATENT).fetchall()
        joined = cat.con.sql(JOIN).fetchall()
        concepts = dict(cat.con.sql("SELECT concept_id, concept FROM concepts").fetchall())
    assert [(m, n) for m, n, _ in latent] == [("diffmean", 3), ("pca", 3)]
    assert len(concepts) == 3 and [(m, i, c) for m, i, c, _ in joined] == \
        [(m, i, concepts[i]) for m in ("diffmean", "pca") for i in sorted(concepts)]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for cwd, catalog, search_path in ((scored.parent, "catalog.duckdb", None), (elsewhere, str(scored), scored.parent)):
        rows = _old_query(exe, catalog, LATENT, cwd, search_path)
        assert [(r["method"], r["n_concepts"]) for r in rows] == [(m, n) for m, n, _ in latent]
        assert [r["mean_auroc"] for r in rows] == pytest.approx([a for _, _, a in latent], abs=1e-12)
        # no steering in this warehouse: the view binds and runs (every steering view under it) with no rows
        assert _old_query(exe, catalog, STEERING, cwd, search_path) == []
        rows = _old_query(exe, catalog, JOIN, cwd, search_path)
        assert [(r["method"], r["concept_id"], r["concept"]) for r in rows] == [(m, i, c) for m, i, c, _ in joined]
        assert [r["auroc"] for r in rows] == pytest.approx([a for *_, a in joined], abs=1e-12)


def test_readme_notebook_snippet_runs_from_the_folder_and_from_elsewhere(scored, tmp_path, monkeypatch):
    section = (REPO / "README.md").read_text().split("## Query the warehouse", 1)[1].split("\n## ", 1)[0]
    snippets = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(snippets) == 1, "README's 'Query the warehouse' should hold one Python snippet"
    monkeypatch.chdir(scored.parent)
    names: dict = {}
    exec(compile(snippets[0], "README.md", "exec"), names)  # as printed, from the catalog's folder
    board = names["q"]("SELECT method, n_concepts FROM latent_leaderboard ORDER BY method")
    assert board.rows() == [("diffmean", 3), ("pca", 3)]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    board = names["q"]("SELECT method, n_concepts FROM latent_leaderboard ORDER BY method", folder=str(scored.parent))
    assert board.rows() == [("diffmean", 3), ("pca", 3)]

"""`axw demo` end to end with the embedded SmolLM2 on the shipped Concept10 data (the issue's acceptance run)."""

from __future__ import annotations

import pytest

from axwarehouse.catalog import Catalog
from conftest import axw


@pytest.mark.slow
def test_demo_prints_leaderboard_of_four_methods_with_strong_diffmean_and_probe(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the README runs `axw demo` with the default ./catalog.duckdb
    code, out, err = axw("demo")
    assert code == 0, err
    assert "latent leaderboard" in out
    with Catalog(tmp_path / "catalog.duckdb", read_only=True) as cat:
        board = {m: (a, n) for m, a, n in cat.sql(
            "SELECT method, mean_auroc, n_concepts FROM latent_leaderboard WHERE concept_set = 'concept10'"
        ).fetchall()}
        layer = cat.sql("SELECT DISTINCT layer FROM latent_scores").fetchall()
    assert set(board) == {"diffmean", "pca", "lat", "probe"}
    assert all(n == 10 for _, n in board.values())
    assert board["diffmean"][0] >= 0.90, board
    assert board["probe"][0] >= 0.90, board
    assert len(layer) == 1
    for method in board:
        assert method in out
    # a second demo run reuses every table
    code, out, _ = axw("demo")
    assert code == 0 and "all 1706 examples cached" in out and "nothing to do" in out

"""AxBench release import: rows in = rows out, categories mapped, shared negatives kept, re-import is a no-op."""

from __future__ import annotations

import polars as pl

from axwarehouse.catalog import Catalog
from conftest import CONCEPT10, axw, tree_state


def test_concept10_rows_in_equal_rows_out(catalog_path):
    catalog_path.parent.mkdir(parents=True)
    code, out, err = axw("--catalog", catalog_path, "import-axbench", CONCEPT10, "-c", "concept10")
    assert code == 0, err
    assert "10 concepts, 1706 generations" in out
    train = pl.read_parquet(CONCEPT10 / "generate" / "train_data.parquet")
    evald = pl.read_parquet(CONCEPT10 / "inference" / "latent_eval_data.parquet")
    with Catalog(catalog_path, read_only=True) as cat:
        counts = dict(((s, c), n) for s, c, n in cat.sql(
            "SELECT split, category, count(*) FROM generations GROUP BY ALL").fetchall())
        shared = cat.sql("SELECT genre, count(*) FROM generations WHERE concept_id = -1 GROUP BY 1 ORDER BY 1"
                         ).fetchall()
        pairs = set(cat.sql("SELECT input, output FROM generations WHERE split = 'latent_eval'").fetchall())
        concepts = cat.sql("SELECT concept_id, genre, sae_id FROM concepts ORDER BY 1").fetchall()
        lineage = cat.sql("SELECT count(DISTINCT run_id), count(*) FILTER (WHERE code_version IS NULL) "
                          "FROM generations").fetchall()[0]
    assert counts == {("train", "positive"): 720, ("train", "negative"): 216, ("latent_eval", "positive"): 360,
                      ("latent_eval", "negative"): 360, ("latent_eval", "hard_negative"): 50}
    assert sum(counts.values()) == train.height + evald.height
    assert shared == [("code", 72), ("math", 72), ("text", 72)]
    assert pairs == set(zip(evald["input"].to_list(), evald["output"].to_list()))
    assert [c for c, *_ in concepts] == list(range(10)) and all(s is not None for *_, s in concepts)
    assert lineage == (1, 0)

    before = tree_state(catalog_path.parent / "warehouse")
    code, out, _ = axw("--catalog", catalog_path, "import-axbench", CONCEPT10, "-c", "concept10")
    assert code == 0 and "already imported" in out
    assert tree_state(catalog_path.parent / "warehouse") == before


def test_runs_ledger_records_each_stage(catalog_path, small_release):
    catalog_path.parent.mkdir(parents=True)
    axw("--catalog", catalog_path, "import-axbench", small_release, "-c", "s3")
    with Catalog(catalog_path, read_only=True) as cat:
        rows = cat.sql("SELECT stage, status, rows_written > 0, config_hash IS NOT NULL, code_version IS NOT NULL, "
                       "finished_at >= started_at FROM runs").fetchall()
    assert rows == [("import-axbench", "ok", True, True, True, True)]

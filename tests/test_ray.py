"""Stages on Ray (`--workers 2`, a local cluster on CPU) write the rows a single process writes; a worker killed
mid-shard leaves nothing half-visible, and a re-run completes the missing shard without duplicates."""

from __future__ import annotations

import numpy as np
import pytest

from axwarehouse.catalog import Catalog
from axwarehouse.staging import FAULT_ENV, STAGING
from conftest import axw

ray = pytest.importorskip("ray", reason="the test extra installs Ray")

# --batch-tokens 1: every example is its own forward batch in both runs, so sharding cannot change which examples
# share a padded batch (with bigger batches, bf16 values may differ in rounding where batch composition differs)
ACT = ["--batch-tokens", "1"]
FAST = ["--set", "reft-r1.epochs=1"]
METHODS = ["--method", "diffmean", "--method", "probe", "--method", "reft-r1"]
ACT_Q = ("SELECT split, example_id, position, concept_id, token, act_bf16 FROM activations "
         "ORDER BY split, example_id, position")
ART_Q = "SELECT method, concept_id, config_hash, direction, bias FROM method_artifacts ORDER BY method, concept_id"
LAT_Q = ("SELECT method, concept_id, example_id, score, max_position, token_scores FROM latent_scores "
         "ORDER BY method, concept_id, example_id")


def _pipeline(catalog_path, common, extra=()):
    base = ["--catalog", catalog_path]
    code, out, err = axw(*base, "activations", *common, *ACT, *extra)
    assert code == 0, (out, err)
    code, out, err = axw(*base, "train", *common, *METHODS, *FAST, *extra)
    assert code == 0, (out, err)
    code, out, err = axw(*base, "latent", *common, *METHODS, *FAST, *extra)
    assert code == 0, (out, err)
    return out


def _rows(catalog_path, query):
    with Catalog(catalog_path, read_only=True) as cat:
        return cat.sql(query).fetchall()


@pytest.fixture(scope="module")
def single(tmp_path_factory, tiny_model_dir):
    """The single-process run of activations → train (diffmean, probe, reft-r1) → latent."""
    from conftest import write_release

    root = tmp_path_factory.mktemp("single")
    release = write_release(root / "release")
    catalog_path = root / "wh" / "catalog.duckdb"
    catalog_path.parent.mkdir()
    assert axw("--catalog", catalog_path, "import-axbench", release, "-c", "s3")[0] == 0
    common = ["-c", "s3", "--model", str(tiny_model_dir), "--layer", "2"]
    _pipeline(catalog_path, common)
    return catalog_path, common, release


@pytest.fixture(scope="module")
def single_acts(tmp_path_factory, tiny_model_dir):
    """Only the single-process activations (what the worker-kill tests compare with)."""
    from conftest import write_release

    root = tmp_path_factory.mktemp("single-acts")
    release = write_release(root / "release")
    catalog_path = root / "wh" / "catalog.duckdb"
    catalog_path.parent.mkdir()
    assert axw("--catalog", catalog_path, "import-axbench", release, "-c", "s3")[0] == 0
    common = ["-c", "s3", "--model", str(tiny_model_dir), "--layer", "2"]
    assert axw("--catalog", catalog_path, "activations", *common, *ACT)[0] == 0
    return catalog_path, common, release


def _fresh(tmp_path, reference):
    _, common, release = reference
    catalog_path = tmp_path / "wh" / "catalog.duckdb"
    catalog_path.parent.mkdir()
    assert axw("--catalog", catalog_path, "import-axbench", release, "-c", "s3")[0] == 0
    return catalog_path, common


@pytest.fixture
def fresh(tmp_path, single):
    return _fresh(tmp_path, single)


@pytest.fixture
def fresh_acts(tmp_path, single_acts):
    return _fresh(tmp_path, single_acts)


def _assert_same_rows(a, b):
    acts_a, acts_b = _rows(a, ACT_Q), _rows(b, ACT_Q)
    assert len(acts_a) == len(acts_b) > 0
    assert acts_a == acts_b  # keys, owners, tokens and bf16 bit patterns: identical
    arts_a, arts_b = _rows(a, ART_Q), _rows(b, ART_Q)
    assert [r[:3] for r in arts_a] == [r[:3] for r in arts_b] and len(arts_a) == 9
    for ra, rb in zip(arts_a, arts_b):
        # the same computation; worker processes run torch single-threaded, which may reorder float sums
        np.testing.assert_allclose(np.array(ra[3]), np.array(rb[3]), rtol=0, atol=1e-5, err_msg=str(ra[:2]))
    lat_a, lat_b = _rows(a, LAT_Q), _rows(b, LAT_Q)
    assert [r[:3] for r in lat_a] == [r[:3] for r in lat_b] and len(lat_a) > 0
    scores_a = np.array([r[3] for r in lat_a], dtype=float)
    scores_b = np.array([r[3] for r in lat_b], dtype=float)
    np.testing.assert_allclose(scores_a, scores_b, rtol=0, atol=1.01e-3)  # scores are rounded to 3 decimals


def test_two_ray_workers_write_the_single_process_rows(single, fresh):
    catalog_path, common = fresh
    out = _pipeline(catalog_path, common, ["--workers", "2"])
    assert "concept shards on Ray" in out
    _assert_same_rows(single[0], catalog_path)
    assert not any((catalog_path.parent / "warehouse" / STAGING).rglob("*.parquet"))  # everything committed
    with Catalog(catalog_path, read_only=True) as cat:
        runs = cat.sql("SELECT stage, status FROM runs WHERE stage IN ('activations', 'train', 'latent') "
                       "ORDER BY started_at").fetchall()
    assert runs == [("activations", "ok"), ("train", "ok"), ("latent", "ok")]  # one driver run per stage


def test_killed_worker_is_reported_and_the_rerun_completes(single_acts, fresh_acts, monkeypatch):
    """Shard 0 (the shared negatives) kills its worker after its first staged file, on every attempt (here: one,
    ``--ray-retries 0``; the retry itself is the next test): the command fails in one line, the other shards are
    committed, none of shard 0's rows is visible; the re-run computes only shard 0 and the table equals the
    single-process one (no duplicate, none missing)."""
    catalog_path, common = fresh_acts
    base = ["--catalog", catalog_path, "activations", *common, *ACT, "--workers", "2", "--ray-retries", "0"]
    monkeypatch.setenv(FAULT_ENV, "0")
    code, out, err = axw(*base)
    ours = [line for line in err.splitlines() if line.startswith("error:")]  # (Ray logs its own lines too)
    assert code != 0 and len(ours) == 1 and "1 of" in ours[0] and "shards failed" in ours[0], (out, err)
    assert "worker died in every attempt (1)" in ours[0]
    with Catalog(catalog_path, read_only=True) as cat:
        owners = {c for (c,) in cat.sql("SELECT DISTINCT concept_id FROM activations").fetchall()}
        n = cat.count("activations")
    assert owners == {0, 1, 2}  # the killed shard's half-written file never became visible
    staged = list((catalog_path.parent / "warehouse" / STAGING).rglob("*.parquet"))
    assert staged  # ... it is still in the staging area, where views do not look
    monkeypatch.delenv(FAULT_ENV)
    code, out, err = axw(*base)
    assert code == 0, (out, err)
    with Catalog(catalog_path, read_only=True) as cat:
        dupes = cat.sql("SELECT count(*) FROM (SELECT split, example_id, position FROM activations GROUP BY ALL "
                        "HAVING count(*) > 1)").fetchall()[0][0]
        n_after = cat.count("activations")
    assert dupes == 0 and n_after > n
    assert _rows(catalog_path, ACT_Q) == _rows(single_acts[0], ACT_Q)
    assert not list((catalog_path.parent / "warehouse" / STAGING).rglob("*.parquet"))  # leftovers dropped


def test_a_worker_killed_once_is_retried(single_acts, fresh_acts, monkeypatch, tmp_path):
    """Shard 1's first attempt is killed mid-shard; Ray runs it again and the command succeeds with every row."""
    catalog_path, common = fresh_acts
    marker = tmp_path / "killed-once"
    monkeypatch.setenv(FAULT_ENV, f"1:{marker}")
    code, out, err = axw("--catalog", catalog_path, "activations", *common, *ACT, "--workers", "2")
    assert code == 0, (out, err)
    assert marker.exists()  # the kill happened
    assert _rows(catalog_path, ACT_Q) == _rows(single_acts[0], ACT_Q)


def test_ray_is_imported_only_when_asked():
    """Single-process stages never import Ray (it is an optional extra)."""
    import subprocess
    import sys

    code = ("import sys, axwarehouse.cli, axwarehouse.stages.activations, axwarehouse.stages.train, "
            "axwarehouse.stages.latent, axwarehouse.stages.steer, axwarehouse.stages.judge; "
            "assert 'ray' not in sys.modules, 'ray imported'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr

"""All-or-nothing shard commits and Ray placement, on a tiny stage (tests/staged_toy.py: no model).

Commits: a real driver process (a subprocess running the worker's code for one shard, then the commit) is killed
with SIGKILL at every step of the commit — after deciding to commit, between every pair of file moves, after the
last move, after retiring the shard. At each kill point no reader sees a part of the shard, and both a
single-process re-run and a Ray re-run (and a Ray run after the single-process one) leave the tables equal to a
clean run's, with no duplicate key.

Single process: a write that spans several partitions lands file by file; a kill between its files loses no row
and repeats none on the re-run.

Placement: on a local cluster that declares 4 GPUs (Ray accepts declared resources on a CPU box), `--workers 2
--device cuda` never has more than 2 tasks alive, and concurrent tasks hold distinct GPUs, each its own
CUDA_VISIBLE_DEVICES.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from axwarehouse.catalog import Catalog
from axwarehouse.errors import AxwError
from axwarehouse.staging import COMMIT_FAULT_ENV, STAGING

ray = pytest.importorskip("ray", reason="the test extra installs Ray")

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
import staged_toy  # noqa: E402  (tests/ is on the path of the driver and, through PYTHONPATH, of Ray's workers)

SHARD_CONCEPT = 2  # the shard the killed driver commits; 0 and 1 are committed before it, 3 is left to the re-run
FILES_PER_SHARD = 4  # two tables x two method partitions
LAT_Q = ("SELECT method, concept_id, example_id, score, token_scores FROM latent_scores "
         "ORDER BY method, concept_id, example_id")
ART_Q = "SELECT method, concept_id, direction, bias FROM method_artifacts ORDER BY method, concept_id"

DRIVER = """
import sys
from axwarehouse.catalog import Catalog
from axwarehouse.distributed import _run_shard
from axwarehouse.staging import commit_shard, shard_folder
catalog, concept = sys.argv[1], int(sys.argv[2])
with Catalog(catalog) as cat, cat.run("toy", {"shards": 1}) as run:
    _run_shard("staged_toy:run_toy", "staged_toy:ToyConfig", {"concepts": (concept,)}, str(cat.warehouse), "toy",
               run.run_id, 0, None)
    commit_shard(cat, shard_folder(cat.warehouse, "toy", run.run_id, 0), run)
print("committed")
"""


@pytest.fixture(scope="module")
def cluster():
    """One local Ray cluster for the module, shaped like a 4-core box with 4 GPUs; its workers import tests/."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))
        if ray.is_initialized():  # a cluster an in-process `axw --workers` of another test file left running
            ray.shutdown()
        ray.init(num_cpus=4, num_gpus=4, include_dashboard=False, log_to_driver=False, configure_logging=False)
        try:
            yield
        finally:
            ray.shutdown()


def _rows(catalog: Path) -> tuple[list, list]:
    with Catalog(catalog, read_only=True) as cat:
        return cat.sql(LAT_Q).fetchall(), cat.sql(ART_Q).fetchall()


def _assert_equal_rows(got: tuple[list, list], want: tuple[list, list]) -> None:
    """Same keys in the same order; float columns equal within 1e-6 (written once, but compared as floats)."""
    (lat, art), (lat_want, art_want) = got, want
    assert [r[:3] for r in lat] == [r[:3] for r in lat_want] and len(lat) > 0
    np.testing.assert_allclose([r[3] for r in lat], [r[3] for r in lat_want], rtol=0, atol=1e-6)
    np.testing.assert_allclose([r[4] for r in lat], [r[4] for r in lat_want], rtol=0, atol=1e-6)
    assert [r[:2] for r in art] == [r[:2] for r in art_want] and len(art) > 0
    np.testing.assert_allclose([r[2] for r in art], [r[2] for r in art_want], rtol=0, atol=1e-6)
    np.testing.assert_allclose([r[3] for r in art], [r[3] for r in art_want], rtol=0, atol=1e-6)


DUPES = ("SELECT (SELECT count(*) FROM (SELECT method, concept_id, example_id FROM {lat} GROUP BY ALL "
         "HAVING count(*) > 1)) + (SELECT count(*) FROM (SELECT method, concept_id FROM {art} GROUP BY ALL "
         "HAVING count(*) > 1))")


def _duplicate_keys(catalog: Path) -> int:
    """Keys seen twice through the catalog's views, and in the table folders' files as any Parquet reader (the
    plain DuckDB CLI) reads them."""
    import duckdb

    with Catalog(catalog, read_only=True) as cat:
        seen = cat.sql(DUPES.format(lat="latent_scores", art="method_artifacts")).fetchall()[0][0]
    files = {t: f"read_parquet('{catalog.parent / 'warehouse' / t}/*/*.parquet')"
             for t in ("latent_scores", "method_artifacts")}
    with duckdb.connect() as con:
        on_disk = con.sql(DUPES.format(lat=files["latent_scores"], art=files["method_artifacts"])).fetchall()[0][0]
    return seen + on_disk


def _shard_rows_visible(catalog: Path) -> tuple[int, int]:
    with Catalog(catalog, read_only=True) as cat:
        return (cat.count("latent_scores", "concept_id = ?", [SHARD_CONCEPT]),
                cat.count("method_artifacts", "concept_id = ?", [SHARD_CONCEPT]))


def _new_catalog(root: Path) -> Path:
    root.mkdir(parents=True)
    return root / "catalog.duckdb"


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> tuple[list, list]:
    """The rows of one single-process run over every concept."""
    path = _new_catalog(tmp_path_factory.mktemp("clean") / "wh")
    with Catalog(path) as cat:
        staged_toy.run_toy(cat, staged_toy.ToyConfig())
    return _rows(path)


@pytest.fixture(scope="module")
def before(tmp_path_factory) -> Path:
    """A warehouse where concepts 0 and 1 are committed (single process): the killed driver commits concept 2."""
    path = _new_catalog(tmp_path_factory.mktemp("before") / "wh")
    with Catalog(path) as cat:
        staged_toy.run_toy(cat, staged_toy.ToyConfig(concepts=(0, 1)))
    return path


def _copy(src: Path, dest: Path) -> Path:
    shutil.copytree(src.parent, dest)
    return dest / src.name


def _single(catalog: Path) -> None:
    with Catalog(catalog) as cat:
        staged_toy.run_toy(cat, staged_toy.ToyConfig())


def _on_ray(catalog: Path) -> None:
    from axwarehouse.distributed import RayOptions, run_sharded, shards_of

    with Catalog(catalog) as cat:
        run_sharded(cat, "toy", "staged_toy:run_toy", staged_toy.ToyConfig(), shards_of(staged_toy.CONCEPTS, 1),
                    RayOptions(workers=2))


# kill points: 0 = decided (renamed to .commit), k = after the k-th file move, FILES_PER_SHARD + 1 = after retiring
@pytest.mark.parametrize("kill_at", range(FILES_PER_SHARD + 2))
def test_driver_killed_while_committing(kill_at, before, clean, cluster, tmp_path):
    catalog = _copy(before, tmp_path / "killed")
    env = {**os.environ, COMMIT_FAULT_ENV: str(kill_at),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", DRIVER, str(catalog), str(SHARD_CONCEPT)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stdout, proc.stderr)
    staged = list((catalog.parent / "warehouse" / STAGING / "toy").iterdir())
    assert len(staged) == 1  # the commit the kill interrupted, at the step asked for:
    retired = kill_at == FILES_PER_SHARD + 1
    assert staged[0].suffix == (".done" if retired else ".commit"), staged
    assert len(list(staged[0].rglob("*.parquet"))) == (0 if retired else FILES_PER_SHARD - kill_at)

    # what a reader sees: none of the shard's rows, or all of them (only once the shard was retired)
    seen = _shard_rows_visible(catalog)
    full = (len(staged_toy.METHODS) * staged_toy.EXAMPLES, len(staged_toy.METHODS))
    assert seen == (full if retired else (0, 0)), seen
    assert _duplicate_keys(catalog) == 0

    single = _copy(catalog, tmp_path / "single")
    _single(single)  # one process: rolls the commit forward, then computes what is missing (concept 3)
    assert _duplicate_keys(single) == 0
    _assert_equal_rows(_rows(single), clean)
    assert not list((single.parent / "warehouse" / STAGING).glob("*/*"))  # no unit left in any stage's folder
    _on_ray(single)  # a later Ray run finds nothing left over to commit a second time
    assert _duplicate_keys(single) == 0
    _assert_equal_rows(_rows(single), clean)

    _on_ray(catalog)  # a Ray re-run of the killed warehouse
    assert _duplicate_keys(catalog) == 0
    _assert_equal_rows(_rows(catalog), clean)
    assert not list((catalog.parent / "warehouse" / STAGING).glob("*/*"))


def test_clean_ray_run_equals_single_process(cluster, clean, tmp_path):
    catalog = _new_catalog(tmp_path / "wh")
    _on_ray(catalog)
    assert _duplicate_keys(catalog) == 0
    _assert_equal_rows(_rows(catalog), clean)


# -- placement ---------------------------------------------------------------------------------------------------
def _max_alive(records: list[dict]) -> int:
    events = sorted([(r["start"], 1) for r in records] + [(r["end"], -1) for r in records])
    alive = peak = 0
    for _, step in events:  # an end before a start at the same instant: sorted -1 first
        alive += step
        peak = max(peak, alive)
    return peak


def test_workers_bound_tasks_and_each_holds_its_own_gpu(cluster, tmp_path):
    """8 shards, `--workers 2`, on a cluster with 4 (declared) GPUs and 4 CPUs: at most 2 tasks alive at once,
    each holding one CPU and exactly one GPU, concurrent tasks on different GPUs, CUDA_VISIBLE_DEVICES set to the
    task's GPU."""
    from axwarehouse.distributed import RayOptions, run_sharded

    records_dir = tmp_path / "records"
    records_dir.mkdir()
    catalog = _new_catalog(tmp_path / "wh")
    cfg = staged_toy.PlacementConfig(record_dir=str(records_dir), seconds=0.5)
    with Catalog(catalog) as cat:
        run_sharded(cat, "placement", "staged_toy:record_placement", cfg, [(k,) for k in range(8)],
                    RayOptions(workers=2), gpu=True)
    records = [json.loads(p.read_text()) for p in sorted(records_dir.glob("*.json"))]
    assert sorted(c for r in records for c in r["concepts"]) == list(range(8))
    assert _max_alive(records) <= 2
    for r in records:
        assert len(r["gpu_ids"]) == 1 and r["cuda_visible_devices"] == r["gpu_ids"][0], r
        assert r["resources"] == {"CPU": 1.0, "GPU": 1.0}, r  # the CPU that drives the GPU is declared too
    for i, a in enumerate(records):
        for b in records[i + 1:]:
            if a["start"] < b["end"] and b["start"] < a["end"]:  # ran at the same time
                assert a["gpu_ids"] != b["gpu_ids"], (a, b)


def test_local_cluster_resources_bound_cpus_and_gpus():
    from axwarehouse.distributed import local_cluster_resources, task_resources

    assert local_cluster_resources(2, gpu=True, gpus_present=8) == {"num_cpus": 2, "num_gpus": 2}
    assert local_cluster_resources(3, gpu=False, gpus_present=8) == {"num_cpus": 3, "num_gpus": 0}
    assert task_resources(True) == {"num_cpus": 1, "num_gpus": 1}
    assert task_resources(False) == {"num_cpus": 1, "num_gpus": 0}
    with pytest.raises(AxwError, match=r"^--workers 5 asks for one GPU per worker but 4 GPU\(s\) are visible: "
                                       r"give --workers 4 or fewer$"):
        local_cluster_resources(5, gpu=True, gpus_present=4)
    with pytest.raises(AxwError, match="none is visible"):
        local_cluster_resources(1, gpu=True, gpus_present=0)


def test_activation_reader_leaves_out_a_pending_commit(tmp_path):
    """The activation reader opens partition folders itself: a file of a unit whose commit has begun (its
    ``.commit`` folder exists) is not listed until the unit is retired."""
    import pyarrow as pa

    from axwarehouse.activation_store import ActivationReader, partition_dir
    from axwarehouse.warehouse_files import atomic_write_parquet

    warehouse = tmp_path / "warehouse"
    folder = partition_dir(warehouse, "m", 1, "s", "train", 5)
    atomic_write_parquet(pa.table({"x": [1]}), folder / "part-run1-00001.parquet")  # a single-process file
    atomic_write_parquet(pa.table({"x": [2]}), folder / "part-run2-s00000-00001.parquet")  # moved by a commit
    pending = warehouse / STAGING / "activations" / "run2-s00000.commit"
    pending.mkdir(parents=True)
    assert [p.name for p in ActivationReader(warehouse, "m", 1, "s", "train").concept_files(5)] == [
        "part-run1-00001.parquet"]
    pending.rename(pending.with_name("run2-s00000.done"))
    assert [p.name for p in ActivationReader(warehouse, "m", 1, "s", "train").concept_files(5)] == [
        "part-run1-00001.parquet", "part-run2-s00000-00001.parquet"]


# -- the single-process path -------------------------------------------------------------------------------------
ACT_KEYS = "SELECT split, example_id, position, concept_id, token FROM activations ORDER BY split, example_id, position"


def test_activations_killed_between_the_partition_files_of_one_write(tmp_path, tiny_model_dir, monkeypatch):
    """One single-process write spans several partitions (one folder per owner concept) and lands file by file: a
    kill between two of its files leaves whole examples visible, and the re-run computes exactly the others (what
    is missing is per example, and an example's rows sit in one file), so the table equals a clean run's."""
    from axwarehouse import catalog as catalog_mod
    from axwarehouse import table_writes as writes_mod  # where a table's part files are written
    from conftest import write_release
    from axwarehouse.stages.activations import ActivationsConfig, run_activations
    from axwarehouse.stages.import_axbench import import_axbench

    release = write_release(tmp_path / "release")
    # one write for every example concept 0 owns: a partition file per split
    cfg = ActivationsConfig("s3", str(tiny_model_dir), 2, file_tokens=10**9, concepts=(0,))
    paths = {}
    for name in ("clean", "killed"):
        paths[name] = _new_catalog(tmp_path / name)
        with Catalog(paths[name]) as cat:
            import_axbench(cat, release, "s3")
    with Catalog(paths["clean"]) as cat:
        run_activations(cat, cfg)

    real_write = writes_mod.atomic_write_parquet
    written = {"activations": 0}

    def dying_write(table, path):
        if "activations" in path.parts and path.name != catalog_mod.SCHEMA_FILE:
            if written["activations"] == 1:
                raise KeyboardInterrupt  # the second partition file never lands, as if the process was killed
            written["activations"] += 1
        return real_write(table, path)

    monkeypatch.setattr(writes_mod, "atomic_write_parquet", dying_write)
    with Catalog(paths["killed"]) as cat, pytest.raises(KeyboardInterrupt):
        run_activations(cat, cfg)
    monkeypatch.setattr(writes_mod, "atomic_write_parquet", real_write)
    partial, clean_rows = _act_keys(paths["killed"]), _act_keys(paths["clean"])
    assert 0 < len(partial) < len(clean_rows)
    with Catalog(paths["killed"]) as cat:
        resumed = run_activations(cat, cfg)
    assert resumed.already > 0 and resumed.examples > 0
    assert _act_keys(paths["killed"]) == clean_rows


def _act_keys(catalog: Path) -> list[tuple]:
    with Catalog(catalog, read_only=True) as cat:
        return cat.sql(ACT_KEYS).fetchall()

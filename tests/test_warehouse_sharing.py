"""A warehouse shared by many processes: read-only SQL that really is, readers beside a writer, writers in turn,
relocation, damaged files repaired by `axw doctor`, killed runs shown as interrupted, and one-line errors.

Properties about processes run the CLI (or a small writer script) in separate processes; the rest run in-process.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from conftest import REPO, axw, write_release

from axwarehouse.errors import AxwError

CLI = [sys.executable, str(REPO / "cli.py")]

# a writer that starts a run, commits rows, says "ready", then holds the catalog until told to stop
HOLDER = r"""
import pathlib, sys, time
import pyarrow as pa
from axwarehouse.catalog import Catalog
cat_path, ready, release, n = sys.argv[1], pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3]), int(sys.argv[4])
with Catalog(cat_path) as cat:
    with cat.run("holder-test", {"n": n}) as run:
        for i in range(n):  # one file per write, like a stage committing concept by concept
            run.write("concepts", pa.table({"concept_set": ["held"], "concept_id": [i], "concept": [f"held {i}"],
                                            "genre": ["text"], "genres": [["text"]], "ref": [None], "sae_id": [None],
                                            "source": ["test"], "source_hash": ["h"]}))
        ready.write_text("ready")
        while not release.exists():
            time.sleep(0.05)
"""

NOTEBOOK = r"""
import pathlib, sys, time
import duckdb
cat_path, ready, release = sys.argv[1], pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3])
con = duckdb.connect(cat_path, read_only=True)          # a notebook's read-only connection, left open
con.execute(f"SET file_search_path = '{pathlib.Path(cat_path).parent}'")
n = con.sql("SELECT count(*) FROM concepts").fetchall()[0][0]
ready.write_text(str(n))
while not release.exists():
    time.sleep(0.05)
print(con.sql("SELECT count(*) FROM concepts").fetchall()[0][0])
"""


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("AXW_CATALOG", "AXW_WAIT")}
    env["PYTHONPATH"] = str(REPO)
    return env


def _cli(*args, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, env=_env(), timeout=timeout)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def _start(script: str, *args, tmp: Path) -> tuple[subprocess.Popen, Path, Path]:
    ready, release = tmp / f"ready-{time.monotonic_ns()}", tmp / f"release-{time.monotonic_ns()}"
    proc = subprocess.Popen([sys.executable, "-c", script, *map(str, args[:1]), str(ready), str(release),
                             *map(str, args[1:])], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env())
    _wait_for(ready, proc)
    return proc, ready, release


def _one_line_error(proc: subprocess.CompletedProcess | tuple, needle: str) -> str:
    code, err = (proc.returncode, proc.stderr) if isinstance(proc, subprocess.CompletedProcess) else (proc[0], proc[2])
    lines = err.strip().splitlines()
    assert code == 2, (code, err)
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err
    return lines[0]


def _checksums(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def imported(catalog_path, small_release):
    catalog_path.parent.mkdir(parents=True)
    assert axw("--catalog", catalog_path, "import-axbench", small_release, "-c", "s3")[0] == 0
    return catalog_path


# -- 1. read-only means read-only ----------------------------------------------------------------------------------
def test_sql_attacks_are_refused_and_change_nothing(imported, tmp_path):
    wh = imported.parent / "warehouse"
    other = tmp_path / "other.duckdb"
    duckdb.connect(str(other)).close()
    outside = tmp_path / "mine"
    outside.mkdir()
    (outside / "extra.csv").write_text("concept_id,label\n0,zero\n1,one\n")
    before = _checksums(tmp_path)
    attacks = [
        (f"COPY (SELECT * FROM concepts) TO '{wh}/concepts/x.parquet'", "COPY statements are refused"),
        (f"ATTACH '{other}' AS o (READ_WRITE); CREATE TABLE o.t AS SELECT 1", "one SQL statement at a time"),
        (f"ATTACH '{other}' AS o", "ATTACH statements are refused"),
        (f"EXPORT DATABASE '{tmp_path / 'exported'}'", "EXPORT statements are refused"),
        ("SELECT * FROM read_csv('/etc/passwd')", "Permission Error"),
        ("SELECT * FROM read_text('/etc/shadow')", "Permission Error"),
        ("SELECT * FROM glob('/root/**')", "Permission Error"),
        (f"SELECT * FROM read_blob('{imported}')", "Permission Error"),  # the catalog file is outside warehouse/
        (f"SELECT * FROM read_text('{wh}/../catalog.duckdb')", "Permission Error"),
        (f"SELECT * FROM read_csv('{outside}/extra.csv')", "Permission Error"),  # not allowed without --allow-files
        ("INSTALL httpfs", "statements are refused"),
        ("LOAD httpfs", "statements are refused"),
        ("SET enable_external_access = true", "SET statements are refused"),
        ("CREATE TABLE t AS SELECT 1", "CREATE statements are refused"),
        ("DROP VIEW concepts", "DROP statements are refused"),
        ("CALL pragma_version()", "CALL statements are refused"),
        ("PRAGMA enable_profiling", "PRAGMA statements are refused"),
        ("SELECT 1; SELECT 2", "one SQL statement at a time"),
        ("-- comment", "no SQL statement"),
        ("   ", "no SQL statement"),
        ("SELEC nonsense", "SQL error"),
    ]
    for query, needle in attacks:
        _one_line_error(axw("--catalog", imported, "sql", query), needle)
    _one_line_error(axw("--catalog", imported, "sql", "SELECT 1", "--allow-files", tmp_path / "nope"), "no such folder")
    for where, needle in [("true AND (SELECT count(*) FROM read_text('/etc/shadow')) > 0", "Permission Error"),
                          (f"true) TO '{tmp_path / 'evil.csv'}' (FORMAT csv) --", "SQL error")]:
        _one_line_error(axw("--catalog", imported, "export", "concepts", "--where", where,
                            "--out", tmp_path / "out.parquet"), needle)
    assert _checksums(tmp_path) == before  # every file byte for byte, the catalog and other.duckdb included
    assert not (tmp_path / "exported").exists() and not (tmp_path / "evil.csv").exists()
    assert not (tmp_path / "out.parquet").exists()
    # the same queries' legitimate cousins work
    code, out, err = axw("--catalog", imported, "sql", f"SELECT c.concept_id, e.label FROM concepts c JOIN "
                         f"read_csv('{outside}/extra.csv') e USING (concept_id) ORDER BY 1", "--allow-files", outside,
                         "--format", "csv")
    assert code == 0, err
    assert out.split() == ["concept_id,label", "0,zero", "1,one"]
    code, out, _ = axw("--catalog", imported, "sql", "-- how many?\nSELECT count(*) AS n FROM concepts", "--format", "csv")
    assert code == 0 and out.split() == ["n", "3"]


def test_catalogs_open_in_one_process_read_their_own_warehouse_and_settings(imported, tmp_path):
    """The sql/ views live in one database per process; each open's tables and the sandbox's settings are its own."""
    from axwarehouse.catalog import Catalog
    empty = tmp_path / "empty" / "catalog.duckdb"
    empty.parent.mkdir()
    outside = tmp_path / "mine"
    outside.mkdir()
    (outside / "x.csv").write_text("a\n1\n2\n")
    with Catalog(imported, read_only=True) as full, Catalog(empty) as fresh, \
            Catalog(imported, read_only=True, sandbox=True) as boxed:
        for _ in range(2):  # interleaved: neither open's table views leak into the other's derived views
            assert full.sql("SELECT count(*) FROM runs").fetchall() == [(1,)]
            assert fresh.sql("SELECT count(*) FROM runs").fetchall() == [(0,)]
            assert full.count("concepts") == 3 and fresh.count("concepts") == 0
        with pytest.raises(AxwError, match="Permission Error"):
            boxed.user_query(f"SELECT count(*) FROM read_csv('{outside}/x.csv')")
        # the sandbox locked its own database: the other opens still read files outside the warehouse
        assert full.sql(f"SELECT count(*) FROM read_csv('{outside}/x.csv')").fetchall() == [(2,)]
        assert boxed.user_query("SELECT count(*) FROM runs").fetchall() == [(1,)]
    # a catalog.duckdb made in this process after another one (a copy of its bytes) reads its own warehouse
    other = tmp_path / "other" / "catalog.duckdb"
    other.parent.mkdir()
    assert axw("--catalog", other, "import-axbench", write_release(tmp_path / "release2"), "-c", "s3")[0] == 0
    for path, n in ((empty, 0), (other, 3)):
        con = duckdb.connect(str(path), read_only=True)
        try:
            con.execute(f"SET file_search_path = '{path.parent}'")
            assert con.sql("SELECT count(*) FROM concepts").fetchall() == [(n,)]
            assert con.sql("SELECT count(*) FROM runs").fetchall() == [(n // 3,)]
        finally:
            con.close()


# -- 2. many processes at once ------------------------------------------------------------------------------------
def test_reader_and_writer_run_concurrently(imported, tmp_path):
    holder, _, release = _start(HOLDER, imported, 4, tmp=tmp_path)
    try:
        for args in (["status"], ["leaderboard", "latent"], ["sql", "SELECT count(*) AS n FROM concepts", "--format", "csv"]):
            res = _cli("--catalog", imported, *args)
            assert res.returncode == 0, res.stderr
        assert res.stdout.split() == ["n", "7"]  # the writer's 4 committed rows are visible, its lock is no obstacle
        running = _cli("--catalog", imported, "sql", "SELECT status FROM runs WHERE stage = 'holder-test'", "--format", "csv")
        assert running.stdout.split() == ["status", "running"]
    finally:
        release.write_text("go")
        assert holder.wait(60) == 0, holder.communicate()
    done = _cli("--catalog", imported, "sql", "SELECT status, rows_written FROM runs WHERE stage = 'holder-test'",
                "--format", "csv")
    assert done.stdout.split() == ["status,rows_written", "ok,4"]


def test_second_writer_waits_its_turn(imported, tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("alpha\nbeta\n")
    holder, _, release = _start(HOLDER, imported, 1, tmp=tmp_path)
    err_file = tmp_path / "second.err"
    with open(err_file, "w") as err_fh:
        second = subprocess.Popen([*CLI, "--catalog", str(imported), "concepts", "import", str(names), "-c", "later"],
                                  stdout=subprocess.PIPE, stderr=err_fh, text=True, env=_env())
    try:
        deadline = time.monotonic() + 90
        while "waiting for the catalog" not in err_file.read_text():  # it reached the lock and waits, not fails
            assert second.poll() is None, err_file.read_text()
            assert time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(1)
        assert second.poll() is None  # still waiting its turn
    finally:
        release.write_text("go")
    assert holder.wait(60) == 0
    second.communicate(timeout=120)
    err = err_file.read_text()
    assert second.returncode == 0, err
    assert "waiting for the catalog: `" in err and f"(pid {holder.pid} on " in err
    rows = _cli("--catalog", imported, "sql", "SELECT stage, status FROM runs ORDER BY started_at", "--format", "csv")
    assert rows.stdout.split()[-2:] == ["holder-test,ok", "concepts-import,ok"]
    order = _cli("--catalog", imported, "sql", "SELECT (SELECT min(started_at) FROM runs WHERE stage = 'concepts-import')"
                 " > (SELECT max(finished_at) FROM runs WHERE stage = 'holder-test') AS after", "--format", "csv")
    assert order.stdout.split() == ["after", "True"]  # one after the other


def test_wait_limit_gives_a_one_line_error_naming_the_holder(imported, tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("alpha\n")
    holder, _, release = _start(HOLDER, imported, 1, tmp=tmp_path)
    try:
        res = _cli("--catalog", imported, "--wait", "0.5", "concepts", "import", names, "-c", "later")
    finally:
        release.write_text("go")
        holder.wait(60)
    assert res.returncode == 2
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the catalog is still being written by `") and f"pid {holder.pid} " in last
    assert _cli("--catalog", imported, "sql", "SELECT count(*) FROM concepts WHERE concept_set = 'later'",
                "--format", "csv").stdout.split() == ["count_star()", "0"]


def test_open_notebook_connection_does_not_block_a_stage(imported, tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("alpha\nbeta\n")
    # the stage also rebuilds catalog.duckdb (its view definitions 'changed') while the notebook holds it open
    (imported.parent / "warehouse" / ".catalog-views.sha256").unlink()
    notebook, ready, release = _start(NOTEBOOK, imported, tmp=tmp_path)
    try:
        assert ready.read_text() == "3"
        res = _cli("--catalog", imported, "concepts", "import", names, "-c", "nb")
        assert res.returncode == 0, res.stderr
    finally:
        release.write_text("go")
    out, err = notebook.communicate(timeout=60)
    assert notebook.returncode == 0, err
    assert out.split() == ["5"]  # the notebook's open connection still reads (the views resolve to the files)
    con = duckdb.connect(str(imported), read_only=True)  # a fresh connection sees the rebuilt file
    try:
        con.execute(f"SET file_search_path = '{imported.parent}'")
        assert con.sql("SELECT count(*) FROM concepts WHERE concept_set = 'nb'").fetchall() == [(2,)]
    finally:
        con.close()


def test_killed_run_shows_interrupted_with_its_rows(imported, tmp_path):
    holder, _, _ = _start(HOLDER, imported, 5, tmp=tmp_path)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(30)
    res = _cli("--catalog", imported, "sql", "SELECT status, rows_written FROM runs WHERE stage = 'holder-test'",
               "--format", "csv")
    assert res.stdout.split() == ["status,rows_written", "interrupted,5"], res.stderr
    # the next writer records it in the ledger for good
    assert axw("--catalog", imported, "import-axbench", REPO / "axwarehouse" / "data" / "axbench-concept10" /
               "prod_2b_l10_v1", "-c", "c10")[0] == 0
    con = duckdb.connect()
    n = con.sql(f"SELECT count(*) FROM read_parquet('{imported.parent}/warehouse/run_events/*.parquet') "
                "WHERE event = 'finish' AND status = 'interrupted' AND rows_written = 5").fetchall()[0][0]
    assert n == 1


# -- 3. relocatable, 4. self-healing (on a warehouse with latent scores) -----------------------------------------
@pytest.fixture
def scored(tiny_warehouse):
    catalog_path, common = tiny_warehouse
    for stage in ("train", "latent"):
        code, _, err = axw("--catalog", catalog_path, stage, *common, "--method", "diffmean", "--method", "pca")
        assert code == 0, err
    return catalog_path, common


def test_copied_and_moved_warehouse_give_the_same_leaderboard(scored, tmp_path, monkeypatch):
    catalog_path, _ = scored
    board = _cli("--catalog", catalog_path, "leaderboard", "latent", "--format", "json")
    assert board.returncode == 0 and "diffmean" in board.stdout and "pca" in board.stdout
    original = json.loads(board.stdout)
    copy = tmp_path / "copy"
    shutil.copytree(catalog_path.parent, copy, symlinks=True)
    moved = tmp_path / "moved"
    shutil.move(catalog_path.parent, moved)  # the original is gone: nothing may still point at it
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    for folder in (copy, moved):
        res = subprocess.run([*CLI, "--catalog", str(folder / "catalog.duckdb"), "leaderboard", "latent",
                              "--format", "json"], capture_output=True, text=True, env=_env(), cwd=elsewhere)
        assert res.returncode == 0, res.stderr
        rows = json.loads(res.stdout)
        # same rows; a mean (mean_auroc, hard_negative_macro) may differ in its last bit: DuckDB's parallel avg sums
        # in any order, so floats are compared to 1e-12 and everything else exactly
        floats = {k for r in original for k, v in r.items() if isinstance(v, float)}
        assert floats >= {"mean_auroc", "hard_negative_macro"}
        assert [{k: v for k, v in r.items() if k not in floats} for r in rows] == \
            [{k: v for k, v in r.items() if k not in floats} for r in original]
        assert [[r[k] for k in sorted(floats)] for r in rows] == \
            [pytest.approx([r[k] for k in sorted(floats)], abs=1e-12) for r in original]
    # the plain DuckDB file resolves its views against the folder it is opened from
    monkeypatch.chdir(copy)
    con = duckdb.connect("catalog.duckdb", read_only=True)
    try:
        assert con.sql("SELECT count(*) FROM latent_leaderboard").fetchall() == [(2,)]
    finally:
        con.close()


def test_truncated_file_is_reported_quarantined_and_restored(scored):
    catalog_path, _ = scored
    key = "method, model, layer, concept_set, concept_id, split, example_id, score, max_position, token_scores"
    q = f"SELECT {key} FROM latent_scores WHERE method = 'pca' ORDER BY ALL"
    code, before, _ = axw("--catalog", catalog_path, "sql", q, "--format", "json")
    assert code == 0
    files = sorted((catalog_path.parent / "warehouse" / "latent_scores").glob("method=pca/*.parquet"))
    assert len(files) == 1
    damaged = files[0]
    data = damaged.read_bytes()
    damaged.write_bytes(data[: len(data) // 2])
    truncated = damaged.read_bytes()
    for args in (["leaderboard", "latent"], ["sql", "SELECT count(*) FROM latent_scores"], ["status"]):
        line = _one_line_error(_cli("--catalog", catalog_path, *args), "axw doctor")
        assert str(damaged) in line and "corrupt or unreadable table file" in line
    # other tables still read
    assert _cli("--catalog", catalog_path, "sql", "SELECT count(*) FROM concepts").returncode == 0
    doc = _cli("--catalog", catalog_path, "doctor")
    assert doc.returncode == 1, doc.stderr
    assert f"DAMAGED {damaged}" in doc.stdout
    moved = [p for p in (catalog_path.parent / "warehouse" / "_quarantine").rglob("*.parquet")]
    assert len(moved) == 1 and moved[0].read_bytes() == truncated and not damaged.exists()  # moved, not deleted
    command = doc.stdout.split("re-create its rows with: `")[1].split("`")[0]
    assert command.startswith("axw latent -c s3 ") and "--method pca" in command
    res = _cli("--catalog", catalog_path, *command.split()[1:])
    assert res.returncode == 0, res.stderr
    code, after, _ = axw("--catalog", catalog_path, "sql", q, "--format", "json")
    assert code == 0 and after == before  # identical rows
    assert _cli("--catalog", catalog_path, "doctor").stdout.strip().endswith("every table file reads")


# -- 5. settings in the open ----------------------------------------------------------------------------------------
def test_latent_leaderboard_and_status_show_seed_and_set_values(tiny_warehouse):
    catalog_path, common = tiny_warehouse
    for extra in ([], ["--seed", "7", "--set", "probe.lr=0.01"]):
        for stage in ("train", "latent"):
            code, _, err = axw("--catalog", catalog_path, stage, *common, "--method", "probe", *extra)
            assert code == 0, err
    code, out, _ = axw("--catalog", catalog_path, "sql", "SELECT settings FROM latent_leaderboard ORDER BY 1",
                       "--format", "csv")
    assert code == 0 and out.split("\n")[1:3] == ["seed 42", "seed 7 lr=0.01"]
    code, out, _ = axw("--catalog", catalog_path, "status")
    assert "probe seed 42 [" in out and "probe probe.lr=0.01 seed 7 [" in out


# -- 6. one-line errors ----------------------------------------------------------------------------------------------
def test_export_out_folder_is_a_one_line_error_without_stray_files(imported, tmp_path):
    folder = tmp_path / "exports"
    folder.mkdir()
    _one_line_error(axw("--catalog", imported, "export", "concepts", "--out", folder, "--force"), "is a folder")
    assert list(folder.iterdir()) == [] and not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("name, needle", [("x.parquet", "names a .parquet file, not a catalog"),
                                          ("notdb.duckdb", "is not a DuckDB catalog file"),
                                          ("", "is a folder; give the catalog file")])
def test_bad_catalog_paths(tmp_path, name, needle):
    target = tmp_path / name if name else tmp_path
    if name == "notdb.duckdb":
        target.write_text("not a database\n")
    for args in (["status"], ["import-axbench", REPO / "axwarehouse" / "data" / "axbench-concept10" / "prod_2b_l10_v1"]):
        _one_line_error(axw("--catalog", target, *args), needle)
    assert not (tmp_path / "x_warehouse").exists() and not (tmp_path / "notdb_warehouse").exists()


def test_report_without_latent_scores(imported, tmp_path):
    _one_line_error(axw("--catalog", imported, "report", "--out", tmp_path / "rep", "--no-images"),
                    "nothing to report yet")
    assert not (tmp_path / "rep").exists()


def test_negative_wait(imported):
    _one_line_error(axw("--catalog", imported, "--wait", "-1", "status"), "--wait must be >= 0")


@pytest.mark.skipif(shutil.which("unshare") is None or os.geteuid() != 0, reason="needs unshare -m (root)")
def test_read_only_warehouse(imported, tmp_path):
    """A warehouse on a read-only mount (a private mount namespace: root ignores file modes): writers get one line
    and write no run; readers work."""
    names = tmp_path / "names.txt"
    names.write_text("alpha\n")
    wh = imported.parent / "warehouse"
    before = _checksums(imported.parent)

    def under_ro(*args):
        cmd = " ".join(f"'{a}'" for a in [*CLI, "--catalog", imported, *args])
        return subprocess.run(["unshare", "-m", "sh", "-c", f"mount --bind -o ro '{wh}' '{wh}' && exec {cmd}"],
                              capture_output=True, text=True, env=_env(), timeout=120)

    probe = subprocess.run(["unshare", "-m", "sh", "-c", f"mount --bind -o ro '{wh}' '{wh}'"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("mount namespaces unavailable here")
    _one_line_error(under_ro("concepts", "import", names, "-c", "ro"), "is not writable (Read-only file system)")
    assert under_ro("status").returncode == 0
    assert under_ro("sql", "SELECT count(*) FROM runs").returncode == 0
    assert _checksums(imported.parent) == before


def test_axw_run_loads_torch_on_first_use_after_deferring_it(scored):
    """`axw run` defers importing torch while it reads the status; the stage it then runs in the same process (a
    fresh one here, so torch really is deferred) loads it on first use."""
    catalog_path, _ = scored
    for path in (catalog_path.parent / "warehouse" / "latent_scores").glob("method=pca/*.parquet"):
        path.unlink()
    res = _cli("--catalog", catalog_path, "run", timeout=600)
    assert res.returncode == 0, res.stderr
    assert "axw latent" in res.stdout and "--method pca" in res.stdout
    n = _cli("--catalog", catalog_path, "sql", "SELECT count(DISTINCT concept_id) FROM latent_scores WHERE method = 'pca'",
             "--format", "csv")
    assert n.stdout.split()[-1] == "3"

"""`axw sql` and `axw export` only read: every statement of an attack corpus (tests/data/sql_attacks.jsonl — every
DuckDB statement type and the known ways to hide a write or a read of a host file) is refused with one line and
exit status 2, and leaves every file of the warehouse, of the --allow-files folder and of the working directory
as it was. Legitimate read-only queries still work.

Each statement runs through the CLI in-process (as a user types it), with --allow-files, from a working directory
of its own.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import REPO, axw, write_release

CORPUS = REPO / "tests" / "data" / "sql_attacks.jsonl"
ATTACKS = [json.loads(line) for line in CORPUS.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> dict[str, Path]:
    """A warehouse with the small release imported, a folder given to --allow-files (with a CSV to join), a
    folder outside both holding files an attacker wants, and an empty working directory."""
    root = tmp_path_factory.mktemp("sandbox")
    catalog = root / "wh" / "catalog.duckdb"
    catalog.parent.mkdir()
    assert axw("--catalog", catalog, "import-axbench", write_release(root / "release"), "-c", "s3")[0] == 0
    allow, outside, cwd = root / "allow", root / "outside", root / "cwd"
    for folder in (allow, outside, cwd):
        folder.mkdir()
    (allow / "data.csv").write_text("concept_id,label\n0,zero\n1,one\n")
    (outside / "secret.csv").write_text("secret\nhunter2\n")
    (outside / "x.json").write_text('{"secret": 1}\n')
    pq.write_table(pa.table({"secret": [1]}), outside / "t.parquet")
    return {"catalog": catalog, "warehouse": catalog.parent / "warehouse", "allow": allow, "outside": outside,
            "cwd": cwd, "root": root}


def _tree(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder``, by relative path (a new, changed or removed file changes it)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _fill(sql: str, site: dict[str, Path]) -> str:
    table_file = sorted((site["warehouse"] / "concepts").rglob("part-*.parquet"))[0]
    return sql.format(warehouse=site["warehouse"], allow=site["allow"], outside=site["outside"],
                      catalog=site["catalog"], table_file=table_file)


def test_corpus_covers_what_it_claims():
    """At least 40 statements, covering every escape route named in the sandbox's description."""
    text = CORPUS.read_text().upper()
    assert len(ATTACKS) >= 40
    for needle in ("EXPLAIN ANALYZE COPY", "EXPLAIN ANALYZE INSERT", "EXPLAIN ANALYZE CREATE", "EXPLAIN ANALYZE ATTACH",
                   "WITH W AS (COPY", "FROM '/ETC/PASSWD'", "READ_CSV(", "GLOB(", "PARQUET_METADATA(", "SNIFF_CSV(",
                   "ATTACH ", "DETACH ", "USE ", "INSTALL ", "LOAD ", "SET ", "RESET ", "PRAGMA ", "CALL ",
                   "CREATE MACRO", "CREATE SECRET", "IMPORT DATABASE", "EXPORT DATABASE", "CHECKPOINT", "VACUUM",
                   "ANALYZE\"", "PREPARE ", "EXECUTE ", "/* ; */", "-- THE COUNT", "'IT''S;'", "{ALLOW}/"):
        assert needle in text, needle


@pytest.mark.parametrize("attack", ATTACKS, ids=[a["why"] for a in ATTACKS])
def test_attack_is_refused_and_changes_nothing(attack, site, monkeypatch):
    monkeypatch.chdir(site["cwd"])
    watched = (site["warehouse"], site["allow"], site["cwd"], site["outside"])
    before = [_tree(folder) for folder in watched]
    code, out, err = axw("--catalog", site["catalog"], "sql", _fill(attack["sql"], site),
                         "--allow-files", site["allow"])
    lines = err.strip().splitlines()
    assert code == 2, (code, out, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert [_tree(folder) for folder in watched] == before
    assert sorted(p.name for p in site["root"].iterdir()) == ["allow", "cwd", "outside", "release", "wh"]


@pytest.mark.parametrize("where", [
    "true) TO '{allow}/evil.csv' (FORMAT csv) --",
    "concept_id IN (SELECT * FROM query('SELECT 1'))",
    "concept_id IN (WITH w AS (COPY (SELECT 1) TO '{allow}/w.csv') SELECT 1)",
    "true AND (SELECT count(*) FROM read_text('/etc/hostname')) > 0",
    "true; COPY (SELECT 1) TO '{allow}/two.csv'",
])
def test_export_where_cannot_write_or_read_outside(where, site, monkeypatch, tmp_path):
    monkeypatch.chdir(site["cwd"])
    watched = (site["warehouse"], site["allow"], site["cwd"])
    before = [_tree(folder) for folder in watched]
    out = tmp_path / "out.parquet"
    code, _, err = axw("--catalog", site["catalog"], "export", "concepts", "--where", _fill(where, site), "--out", out)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert [_tree(folder) for folder in watched] == before
    assert list(tmp_path.iterdir()) == []  # neither the output nor its temp file


def test_read_only_queries_still_work(site, monkeypatch, tmp_path):
    monkeypatch.chdir(site["cwd"])
    before = _tree(site["warehouse"])
    code, out, err = axw("--catalog", site["catalog"], "sql", "SELECT c.concept_id, e.label FROM concepts c JOIN "
                         f"read_csv('{site['allow']}/data.csv') e USING (concept_id) ORDER BY 1",
                         "--allow-files", site["allow"], "--format", "csv")
    assert code == 0, err
    assert out.split() == ["concept_id,label", "0,zero", "1,one"]
    for query, expected in [
        ("SELECT count(*) AS n FROM runs", ["n", "1"]),  # a view of sql/
        ("WITH c AS (SELECT concept_id FROM concepts) SELECT max(concept_id) AS m FROM c", ["m", "2"]),
        ("SELECT 1 AS v UNION ALL SELECT 2 ORDER BY v", ["v", "1", "2"]),
        ("VALUES (7)", ["col0", "7"]),
        ("FROM range(2) t(i) SELECT i", ["i", "0", "1"]),
        (f"SELECT count(*) AS n FROM parquet_metadata('{site['warehouse']}/concepts/**/part-*.parquet') "
         "WHERE path_in_schema = 'concept_id'", ["n", "1"]),
    ]:
        code, out, err = axw("--catalog", site["catalog"], "sql", query, "--format", "csv")
        assert code == 0, (query, err)
        assert out.split() == expected, query
    code, out, err = axw("--catalog", site["catalog"], "sql", "EXPLAIN SELECT * FROM concepts WHERE concept_id = 1")
    assert code == 0 and "physical_plan" in out, err
    # export writes its file (and only it) from the sandboxed query's rows
    for fmt in ("parquet", "csv"):
        path = tmp_path / f"c.{fmt}"
        code, out, err = axw("--catalog", site["catalog"], "export", "concepts", "--format", fmt, "--out", path,
                             "--where", "concept_id < 2")
        assert code == 0, err
        assert out.strip() == f"exported 2 rows of concepts to {path}"
    assert pq.read_table(tmp_path / "c.parquet").column("concept_id").to_pylist() == [0, 1]
    assert (tmp_path / "c.csv").read_text().splitlines()[0].split(",")[:3] == ['"concept_set"', '"concept_id"',
                                                                               '"concept"']
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.csv", "c.parquet"]
    assert _tree(site["warehouse"]) == before and list(site["cwd"].iterdir()) == []

"""`axw doctor` checks what a table file holds, not only that it reads: a readable Parquet file whose columns are
not the table's, or whose key columns (non-nullable in axwarehouse/schemas.py) hold NULL, is damaged — moved to the
quarantine, never deleted — and doctor prints the command that re-creates its rows; running it restores them."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from conftest import axw, write_release


@pytest.fixture
def imported(tmp_path):
    release = write_release(tmp_path / "release")
    catalog = tmp_path / "wh" / "catalog.duckdb"
    catalog.parent.mkdir()
    assert axw("--catalog", catalog, "import-axbench", release, "-c", "s3")[0] == 0
    return catalog, release


def _concepts_file(catalog) -> tuple:
    files = sorted((catalog.parent / "warehouse" / "concepts").rglob("part-*.parquet"))
    assert len(files) == 1
    return files[0], pq.read_table(files[0])


def _rows(catalog) -> str:
    code, out, err = axw("--catalog", catalog, "sql", "SELECT concept_set, concept_id, concept, genres, ref "
                         "FROM concepts ORDER BY ALL", "--format", "csv")
    assert code == 0, err
    return out


def _schema_wrong(table: pa.Table) -> pa.Table:
    """concept_id as text: the file reads, and so does the view (DuckDB casts it), but it is not a concepts file."""
    i = table.schema.get_field_index("concept_id")
    return table.set_column(i, pa.field("concept_id", pa.string()), pc.cast(table.column(i), pa.string()))


def _null_keys(table: pa.Table) -> pa.Table:
    """Every key column NULL in every row (what a COPY of an all-NULL row over a table file leaves)."""
    schema = pa.schema([f.with_nullable(True) for f in table.schema])
    return pa.table({f.name: pa.nulls(table.num_rows, f.type) if not table.schema.field(f.name).nullable
                     else table.column(f.name) for f in table.schema}, schema=schema)


@pytest.mark.parametrize("damage, why", [
    (_schema_wrong, "schema differs from the table's: concept_id is string, not int64"),
    (_null_keys, "NULL in key columns: concept_set (3 rows), concept_id (3 rows), concept (3 rows)")])
def test_readable_file_with_wrong_contents_is_quarantined_and_recreated(imported, damage, why):
    catalog, release = imported
    before = _rows(catalog)
    path, table = _concepts_file(catalog)
    pq.write_table(damage(table), path)
    damaged = path.read_bytes()
    assert pq.read_table(path).num_rows == 3  # it reads: only its contents are wrong

    code, out, err = axw("--catalog", catalog, "doctor")
    assert code == 1, (out, err)
    assert f"DAMAGED {path}: {why}" in out
    moved = list((catalog.parent / "warehouse" / "_quarantine").rglob("*.parquet"))
    assert len(moved) == 1 and moved[0].read_bytes() == damaged and not path.exists()  # moved, not deleted
    command = out.split("re-create its rows with: `")[1].split("`")[0]
    assert command == "axw import-axbench DIR --replace"
    code, _, err = axw("--catalog", catalog, "import-axbench", release, "-c", "s3", "--replace")
    assert code == 0, err
    assert _rows(catalog) == before
    code, out, _ = axw("--catalog", catalog, "doctor")
    assert code == 0 and out.strip().endswith("every table file reads")


def test_file_without_a_later_nullable_column_is_kept(imported):
    """A file written before a table grew a nullable column lacks it (the view reads NULL): not damage."""
    catalog, _ = imported
    path, table = _concepts_file(catalog)
    pq.write_table(table.drop_columns(["ref"]), path)
    kept = path.read_bytes()
    code, out, err = axw("--catalog", catalog, "doctor")
    assert code == 0 and out.strip().endswith("every table file reads"), (out, err)
    assert path.read_bytes() == kept

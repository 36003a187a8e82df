"""The warehouse's files: how a table's rows become Parquet files (names, partition folders, lineage stamped),
written atomically, and what DuckDB makes of them (types, one-line errors for damaged files).

Below the catalog: the catalog's view binding (:mod:`axwarehouse.table_views`) and writing
(:mod:`axwarehouse.table_writes`), distributed staging and the doctor all name files by these rules.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from axwarehouse import run_ledger, schemas
from axwarehouse.errors import AxwError
from axwarehouse.lineage import code_version, config_hash


_SLUG = re.compile(r"[^A-Za-z0-9_.-]+")


def partition_slug(value: Any) -> str:
    """Folder-safe form of a partition value (model names can be paths or contain ':')."""
    text = str(value)
    slug = _SLUG.sub("_", text).strip("_.") or "_"
    if slug != text:
        # keep distinct values distinct after slugging
        slug = f"{slug[-60:]}-{config_hash(text)[:6]}"
    return slug


_SCALAR_TYPES = {
    pa.string(): "VARCHAR", pa.large_string(): "VARCHAR", pa.bool_(): "BOOLEAN",
    pa.int8(): "TINYINT", pa.uint16(): "USMALLINT", pa.int16(): "SMALLINT", pa.int32(): "INTEGER", pa.int64(): "BIGINT",
    pa.float16(): "FLOAT", pa.float32(): "FLOAT", pa.float64(): "DOUBLE",
    pa.timestamp("us"): "TIMESTAMP", pa.binary(): "BLOB",
}


def duckdb_type(arrow_type: pa.DataType) -> str:
    """DuckDB type name for an arrow type, as DuckDB reads it back from Parquet (float16 becomes FLOAT)."""
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type) or pa.types.is_fixed_size_list(arrow_type):
        return duckdb_type(arrow_type.value_type) + "[]"
    if arrow_type in _SCALAR_TYPES:
        return _SCALAR_TYPES[arrow_type]
    raise TypeError(f"no DuckDB type for {arrow_type}")


def sql_str(text: str) -> str:
    """``text`` as a SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (best effort: some filesystems cannot open a folder)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_parquet(table: pa.Table, path: Path) -> None:
    """Write ``table`` to ``path`` via a temp file in the same folder, fsync, rename."""
    import pyarrow.parquet as pq  # here: readers (status, sql) never pay for importing it
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp, compression="zstd", row_group_size=64 * 1024)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


SCHEMA_FILE = "_schema.parquet"
QUARANTINE = "_quarantine"
STAGING = "_staging"  # staged shards and their commits (axwarehouse/staging.py)
COMMITTING = ".commit"  # a staged unit whose files are moving into the tables: hidden until it is retired


def hidden_prefixes(warehouse: Path) -> tuple[str, ...]:
    """File-name prefixes (``part-<unit>-``) of the commits in progress — or left by a dead writer — whose files
    readers leave out, so that a commit's rows appear in every table at once (see axwarehouse/staging.py)."""
    root = Path(warehouse) / STAGING
    try:
        stages = [e.path for e in os.scandir(root) if e.is_dir()]
    except OSError:
        return ()
    found = []
    for stage in stages:
        try:
            found += [f"part-{e.name.removesuffix(COMMITTING)}-" for e in os.scandir(stage)
                      if e.name.endswith(COMMITTING)]
        except OSError:
            continue
    return tuple(sorted(found))


_FILE_IN_ERROR = re.compile(r"""['"]([^'"]+\.parquet)['"]""")
TRANSIENT = ("No such file", "No files found", "Could not open file", "cannot open file")




def corrupt_file_message(path: str, detail: str = "") -> str:
    why = f" ({detail})" if detail else ""
    return f"corrupt or unreadable table file {path}{why}; run `axw doctor` to quarantine it and see what re-creates it"


def duckdb_error_line(exc: BaseException) -> str:
    """One line for a DuckDB error; a damaged Parquet file becomes 'corrupt … run `axw doctor`'."""
    text = str(exc)
    first = text.splitlines()[0] if text else type(exc).__name__
    if "corrupt or unreadable table file" in first:  # raised by a damaged table's view (see _damaged_select)
        return first[first.index("corrupt or unreadable table file"):]
    m = _FILE_IN_ERROR.search(text)
    if m and isinstance(exc, (duckdb.InvalidInputException, duckdb.IOException)) and not any(
            t in text for t in TRANSIENT):
        detail = first.split(": ", 1)[-1].replace(f"'{m.group(1)}'", "").replace(f'"{m.group(1)}"', "")
        return corrupt_file_message(m.group(1), " ".join(detail.split())[:120])
    return first


def conform_table(table: str, data: pa.Table, run_id: str, chash: str) -> pa.Table:
    """``data`` in ``table``'s schema with lineage stamped (run id, config hash where the stage gave none, code
    version): the one rule for every write, the driver's and a distributed worker's staged files alike."""
    import pyarrow.compute as pc
    schema = schemas.TABLES[table]
    n = data.num_rows
    stamps = {"run_id": run_id, "config_hash": chash, "code_version": code_version()}
    columns = []
    for f in schema:
        if f.name in data.column_names:
            col = data.column(f.name)
            if f.name == "config_hash" and col.null_count:
                col = pc.fill_null(col, chash)
        elif f.name in stamps:
            col = pa.array([stamps[f.name]] * n, pa.string())
        else:
            raise AxwError(f"internal: table {table} write is missing column {f.name}")
        if (pa.types.is_list(f.type) and pa.types.is_fixed_size_list(col.type)
                and col.type.value_type == f.type.value_type):
            columns.append(col)  # a fixed-size list stays one (the file's Arrow schema keeps its width)
            continue
        try:
            columns.append(col.cast(f.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise AxwError(f"internal: column {table}.{f.name} cannot be cast to {f.type}: {exc}") from exc
    fields = [f.with_type(c.type) for f, c in zip(schema, columns)]
    return pa.Table.from_arrays(columns, schema=pa.schema(fields, metadata=schema.metadata))


# tables whose view binds from one footer when every file's name says it holds the current columns (see
# the catalog's view binding, _one_footer_select): the one table whose file count grows with the number of concepts
ONE_FOOTER_TABLES = frozenset({"activations"})


def columns_tag(table: str) -> str:
    """8 hex digits naming the columns (in order) of ``table``'s current schema, carried in every data file's name:
    a file whose name has the current tag holds every current column, so its footer need not be read to bind."""
    names = ",".join(f.name for f in table_schemas()[table])
    return hashlib.sha256(f"{table}:{names}".encode()).hexdigest()[:8]


def data_file_name(table: str, stem: str) -> str:
    """File name of a conformed part file of ``table`` (``<stem>.<columns tag>.parquet``)."""
    return f"{stem}.{columns_tag(table)}.parquet"


def partition_groups(table: str, data: pa.Table) -> list[tuple[list[str], pa.Table]]:
    """``data`` split by ``table``'s partition columns: (folder names ``col=slug``, rows) per distinct value tuple."""
    import pyarrow.compute as pc
    groups: list[tuple[list[str], pa.Table]] = [([], data)]
    for col in schemas.PARTITIONS.get(table, []):
        split: list[tuple[list[str], pa.Table]] = []
        for prefix, sub in groups:
            for value in pc.unique(sub.column(col)).to_pylist():
                mask = pc.equal(sub.column(col), pa.scalar(value, sub.schema.field(col).type))
                split.append((prefix + [f"{col}={partition_slug(value)}"], sub.filter(mask)))
        groups = split
    return groups




def table_schemas() -> dict[str, pa.Schema]:
    """Every table the warehouse holds: the data tables plus the runs ledger."""
    return {**schemas.TABLES, run_ledger.TABLE: run_ledger.RUN_EVENTS}


def empty_select(table: str, where: str = "false") -> str:
    """A query with ``table``'s columns and types (as DuckDB reads them from Parquet) and no rows."""
    cols = ", ".join(f'CAST(NULL AS {duckdb_type(f.type)}) AS "{f.name}"' for f in table_schemas()[table])
    return f"SELECT {cols} FROM range(1) WHERE {where}"




def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file and a rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)

"""`axw export VIEW --format parquet|csv`: copy any view or table of the catalog to a file.

The query (``SELECT * FROM view [WHERE …]``) runs as user SQL on the catalog's sandboxed connection (the one
`axw sql` uses, see :mod:`axwarehouse.sql_sandbox`): ``--where`` can read nothing outside the warehouse and DuckDB
writes nothing. The rows stream out of DuckDB as Arrow batches and this module writes them — to a temp file beside
the output, fsynced, then renamed — so the one file written is the one asked for, and no SQL the user controls
decides what is written where. An existing file is kept unless ``--force``.
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import pyarrow as pa

from axwarehouse.catalog import Catalog
from axwarehouse.warehouse_files import duckdb_error_line
from axwarehouse.errors import AxwError

FORMATS = ("parquet", "csv")
# DuckDB types whose Arrow form pyarrow's CSV writer renders as DuckDB's own COPY did; others become DuckDB's text
_CSV_NATIVE = frozenset({"boolean", "tinyint", "smallint", "integer", "bigint", "utinyint", "usmallint", "uinteger",
                         "ubigint", "float", "double", "varchar", "date", "timestamp", "decimal"})
_BATCH_ROWS = 64 * 1024


def relations(cat: Catalog) -> list[str]:
    """Names of every view and table the catalog exposes."""
    return sorted(r[0] for r in cat.sql(
        "SELECT view_name FROM duckdb_views() WHERE NOT internal AND schema_name = 'main' "
        "UNION SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main'").fetchall())


def export_target(name: str, fmt: str, out: Path | None, force: bool) -> tuple[Path, Path]:
    """(output path, temp path beside it) after checking the output can be written; one-line errors otherwise."""
    if fmt not in FORMATS:
        raise AxwError(f"unknown format {fmt!r} (parquet | csv)")
    out = Path(out) if out is not None else Path(f"{name}.{fmt}")
    if out.is_dir():
        raise AxwError(f"--out {out} is a folder; give a file name, e.g. {out / f'{name}.{fmt}'}")
    if out.exists() and not force:
        raise AxwError(f"{out} exists (use --force to replace it)")
    if not out.parent.is_dir():
        raise AxwError(f"output folder {out.parent} does not exist")
    if not os.access(out.parent, os.W_OK):
        raise AxwError(f"output folder {out.parent} is not writable")
    out = out.resolve()
    return out, out.with_name(f".{out.name}.tmp")


def _csv_query(cat: Catalog, query: str) -> str:
    """``query`` with every column pyarrow's CSV writer cannot render (lists, structs, blobs, …) cast to text."""
    rel = cat.user_query(query)
    cols = []
    for col, kind in zip(rel.columns, rel.types):
        ident = '"' + col.replace('"', '""') + '"'
        cols.append(ident if kind.id in _CSV_NATIVE else f"CAST({ident} AS VARCHAR) AS {ident}")
    return f"SELECT {', '.join(cols)} FROM ({query})"


def _write(reader, fmt: str, tmp: Path) -> int:
    """Write every batch of ``reader`` to ``tmp`` (Parquet zstd, or CSV with a header); returns rows written."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    n = 0
    if fmt == "parquet":
        with pq.ParquetWriter(tmp, reader.schema, compression="zstd") as writer:
            for batch in reader:
                writer.write_batch(batch)
                n += batch.num_rows
    else:
        with pacsv.CSVWriter(tmp, reader.schema) as writer:
            for batch in reader:
                writer.write_batch(batch)
                n += batch.num_rows
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    return n


def export_view(cat: Catalog, name: str, fmt: str = "parquet", out: Path | None = None, where: str | None = None,
                force: bool = False) -> tuple[Path, int]:
    """Write ``SELECT * FROM name [WHERE where]`` to ``out`` (default ``./<name>.<fmt>``); returns (path, rows)."""
    out, tmp = export_target(name, fmt, out, force)
    names = relations(cat)
    if name not in names:
        raise AxwError(f"no view or table {name!r}; available: {', '.join(names)}")
    query = f'SELECT * FROM "{name}"' + (f" WHERE {where}" if where else "")
    try:
        if fmt == "csv":
            query = _csv_query(cat, query)
        # one read-only SELECT, as DuckDB's parser reads it: --where cannot end the statement or add a write
        reader = cat.user_query(query).to_arrow_reader(_BATCH_ROWS)
        n = _write(reader, fmt, tmp)
        os.replace(tmp, out)
    except duckdb.Error as exc:
        raise AxwError(f"export failed: {duckdb_error_line(exc)}") from None
    except (OSError, pa.ArrowException) as exc:
        raise AxwError(f"export failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return out, n

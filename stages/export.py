"""`axw export VIEW --format parquet|csv`: copy any view or table of the catalog to a file (DuckDB COPY).

The query (``SELECT * FROM view [WHERE …]``) runs on the catalog's locked-down connection (the one `axw sql` uses):
``--where`` can read nothing outside the warehouse and write nothing; the only file DuckDB may write is the temp
file beside the output, which then appears by rename. An existing file is kept unless ``--force``.
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb

from axwarehouse.catalog import Catalog, duckdb_error_line
from axwarehouse.errors import AxwError

FORMATS = {"parquet": "(FORMAT parquet, COMPRESSION zstd)", "csv": "(FORMAT csv, HEADER true)"}


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


def export_view(cat: Catalog, name: str, fmt: str = "parquet", out: Path | None = None, where: str | None = None,
                force: bool = False) -> tuple[Path, int]:
    """Write ``SELECT * FROM name [WHERE where]`` to ``out`` (default ``./<name>.<fmt>``); returns (path, rows)."""
    out, tmp = export_target(name, fmt, out, force)
    names = relations(cat)
    if name not in names:
        raise AxwError(f"no view or table {name!r}; available: {', '.join(names)}")
    query = f'SELECT * FROM "{name}"' + (f" WHERE {where}" if where else "")
    try:
        n = cat.user_query(f"SELECT count(*) FROM ({query})").fetchall()[0][0]
        cat.user_query(query)  # one SELECT, as DuckDB's parser reads it: --where cannot end the statement
        cat.con.execute(f"COPY ({query}) TO '{str(tmp).replace(chr(39), chr(39) * 2)}' {FORMATS[fmt]}")
        os.replace(tmp, out)
    except duckdb.Error as exc:
        raise AxwError(f"export failed: {duckdb_error_line(exc)}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return out, int(n)

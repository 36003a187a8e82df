"""`axw export VIEW --format parquet|csv`: copy any view or table of the catalog to a file (DuckDB COPY).

The file appears by rename from a temp name in the same folder; an existing file is kept unless ``--force``.
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb

from axwarehouse.catalog import Catalog
from axwarehouse.errors import AxwError

FORMATS = {"parquet": "(FORMAT parquet, COMPRESSION zstd)", "csv": "(FORMAT csv, HEADER true)"}


def relations(cat: Catalog) -> list[str]:
    """Names of every view and table the catalog exposes."""
    return sorted(r[0] for r in cat.sql(
        "SELECT view_name FROM duckdb_views() WHERE NOT internal AND schema_name = 'main' "
        "UNION SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main'").fetchall())


def export_view(cat: Catalog, name: str, fmt: str = "parquet", out: Path | None = None, where: str | None = None,
                force: bool = False) -> tuple[Path, int]:
    """Write ``SELECT * FROM name [WHERE where]`` to ``out`` (default ``./<name>.<fmt>``); returns (path, rows)."""
    if fmt not in FORMATS:
        raise AxwError(f"unknown format {fmt!r} (parquet | csv)")
    names = relations(cat)
    if name not in names:
        raise AxwError(f"no view or table {name!r}; available: {', '.join(names)}")
    out = Path(out) if out is not None else Path(f"{name}.{fmt}")
    if out.exists() and not force:
        raise AxwError(f"{out} exists (use --force to replace it)")
    if not out.parent.is_dir():
        raise AxwError(f"output folder {out.parent} does not exist")
    query = f'SELECT * FROM "{name}"' + (f" WHERE {where}" if where else "")
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        n = cat.sql(f"SELECT count(*) FROM ({query})").fetchall()[0][0]
        cat.con.execute(f"COPY ({query}) TO '{str(tmp).replace(chr(39), chr(39) * 2)}' {FORMATS[fmt]}")
    except duckdb.Error as exc:
        tmp.unlink(missing_ok=True)
        raise AxwError(f"export failed: {str(exc).splitlines()[0]}") from exc
    os.replace(tmp, out)
    return out, int(n)

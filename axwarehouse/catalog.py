"""The warehouse catalog: a DuckDB file of views over Parquet folders, atomic writes and the ``runs`` ledger.

Layout (for ``--catalog ./catalog.duckdb``)::

    catalog.duckdb            views (one per table and per sql/*.sql file) + the runs table
    warehouse/<table>/[k=v/]part-<run>-<n>.parquet

A table is a folder of Parquet files and a view ``SELECT * FROM read_parquet('<folder>/**/*.parquet')``. Views
use absolute paths, so the file opens in the plain DuckDB CLI from any directory. Every file appears by an atomic
rename, so a killed stage leaves either whole files or nothing visible.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from axwarehouse import schemas
from axwarehouse.errors import AxwError
from axwarehouse.lineage import canonical_json, code_version, config_hash, new_run_id

SQL_DIR = Path(__file__).resolve().parents[1] / "sql"
DEFAULT_CATALOG = "catalog.duckdb"


def default_catalog_path() -> Path:
    """``$AXW_CATALOG`` or ``./catalog.duckdb``."""
    return Path(os.environ.get("AXW_CATALOG") or DEFAULT_CATALOG)


def warehouse_dir_for(catalog_path: Path) -> Path:
    """``warehouse/`` beside ``catalog.duckdb``; ``<stem>_warehouse/`` beside any other catalog name."""
    catalog_path = catalog_path.resolve()
    stem = catalog_path.stem
    name = "warehouse" if stem == "catalog" else f"{stem}_warehouse"
    return catalog_path.parent / name


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


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _fsync_dir(path: Path) -> None:
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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp, compression="zstd", row_group_size=64 * 1024)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


@dataclass
class Run:
    """One execution of a stage; stamps lineage on the rows it writes."""

    catalog: Catalog
    run_id: str
    stage: str
    config: dict[str, Any]
    config_hash: str
    rows_written: int = 0
    files_written: int = 0
    written: dict[str, int] = field(default_factory=dict)

    def write(self, table: str, data: pa.Table) -> int:
        """Stamp lineage on ``data`` and append it to ``table`` atomically. Returns rows written."""
        n = self.catalog.append(table, data, self)
        self.rows_written += n
        self.written[table] = self.written.get(table, 0) + n
        return n


class Catalog:
    """Open (or create) a catalog. Use as a context manager; views are (re)registered on every writable open."""

    def __init__(self, path: str | Path | None = None, *, read_only: bool = False, create: bool = True):
        self.path = Path(path) if path is not None else default_catalog_path()
        self.path = self.path.resolve()
        self.warehouse = warehouse_dir_for(self.path)
        self.read_only = read_only
        if not self.path.exists():
            if read_only or not create:
                raise AxwError(f"no catalog at {self.path} (run a stage such as `axw import-axbench` first)")
            if not self.path.parent.is_dir():
                raise AxwError(f"catalog folder {self.path.parent} does not exist")
        try:
            self.con = duckdb.connect(str(self.path), read_only=read_only)
        except duckdb.Error as exc:
            raise AxwError(f"cannot open catalog {self.path}: {str(exc).splitlines()[0]}") from exc
        self._seq = 0
        if not read_only:
            self.warehouse.mkdir(parents=True, exist_ok=True)
            self.refresh_views()

    # -- lifecycle -------------------------------------------------------------------------------------------
    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- views -----------------------------------------------------------------------------------------------
    def table_dir(self, table: str) -> Path:
        return self.warehouse / table

    def table_files(self, table: str) -> list[Path]:
        root = self.table_dir(table)
        return sorted(root.rglob("*.parquet")) if root.exists() else []

    def _register_table_view(self, table: str) -> None:
        schema = schemas.TABLES[table]
        if self.table_files(table):
            glob = str(self.table_dir(table) / "**" / "*.parquet")
            source = f"read_parquet({_sql_str(glob)}, union_by_name = true, hive_partitioning = false)"
            have = {r[0] for r in self.con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}
            # columns added to a schema after some files were written read as NULL (tables grow columns)
            extra = "".join(f', CAST(NULL AS {duckdb_type(f.type)}) AS "{f.name}"' for f in schema
                            if f.name not in have)
            body = f"SELECT *{extra} FROM {source}"
        else:
            cols = ", ".join(f'CAST(NULL AS {duckdb_type(f.type)}) AS "{f.name}"' for f in schema)
            body = f"SELECT {cols} WHERE false"
        self.con.execute(f'CREATE OR REPLACE VIEW "{table}" AS {body}')

    def refresh_views(self) -> None:
        """Register every table view, then every sql/*.sql file (DDL and derived views, in dependency order)."""
        for table in schemas.TABLES:
            self._register_table_view(table)
        pending = sorted(SQL_DIR.glob("*.sql"))
        while pending:
            failed: list[tuple[Path, str]] = []
            for sql_file in pending:
                try:
                    self.con.execute(sql_file.read_text())
                except (duckdb.CatalogException, duckdb.BinderException) as exc:  # depends on a view not
                    # created yet, or one whose new definition comes later in this pass (columns changed)
                    failed.append((sql_file, str(exc)))
            if len(failed) == len(pending):
                names = ", ".join(f"{p.name}: {msg.splitlines()[0]}" for p, msg in failed)
                raise AxwError(f"cannot create SQL views ({names})")
            pending = [p for p, _ in failed]

    # -- reading ---------------------------------------------------------------------------------------------
    def sql(self, query: str, params: Sequence[Any] | None = None) -> duckdb.DuckDBPyRelation:
        return self.con.sql(query, params=params) if params else self.con.sql(query)

    def arrow(self, query: str, params: Sequence[Any] | None = None) -> pa.Table:
        rel = self.con.sql(query, params=params) if params else self.con.sql(query)
        return rel.to_arrow_table()

    def count(self, table: str, where: str = "true", params: Sequence[Any] | None = None) -> int:
        return int(self.con.execute(f'SELECT count(*) FROM "{table}" WHERE {where}', params or []).fetchall()[0][0])

    # -- writing ---------------------------------------------------------------------------------------------
    def _conform(self, table: str, data: pa.Table, run: Run) -> pa.Table:
        schema = schemas.TABLES[table]
        n = data.num_rows
        stamps = {"run_id": run.run_id, "config_hash": run.config_hash, "code_version": code_version()}
        columns = []
        for f in schema:
            if f.name in data.column_names:
                col = data.column(f.name)
                if f.name == "config_hash" and col.null_count:
                    col = pc.fill_null(col, run.config_hash)
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

    def append(self, table: str, data: pa.Table, run: Run) -> int:
        """Append rows (split by partition values) as new Parquet files, each written atomically."""
        if self.read_only:
            raise AxwError("catalog is open read-only")
        if data.num_rows == 0:
            return 0
        data = self._conform(table, data, run)
        part_cols = schemas.PARTITIONS.get(table, [])
        groups: list[tuple[list[tuple[str, Any]], pa.Table]] = [([], data)]
        for col in part_cols:
            split: list[tuple[list[tuple[str, Any]], pa.Table]] = []
            for prefix, sub in groups:
                for value in pc.unique(sub.column(col)).to_pylist():
                    mask = pc.equal(sub.column(col), pa.scalar(value, sub.schema.field(col).type))
                    split.append((prefix + [(col, value)], sub.filter(mask)))
            groups = split
        for parts, sub in groups:
            folder = self.table_dir(table).joinpath(*[f"{c}={partition_slug(v)}" for c, v in parts])
            self._seq += 1
            atomic_write_parquet(sub, folder / f"part-{run.run_id}-{self._seq:05d}.parquet")
        self._register_table_view(table)
        return data.num_rows

    def delete_where(self, table: str, where: str, params: Sequence[Any] | None = None) -> int:
        """Remove rows matching ``where`` by rewriting (atomically) only the files that contain them."""
        removed = 0
        for path in self.table_files(table):
            src = _sql_str(str(path))
            hits = self.con.execute(f"SELECT count(*) FROM read_parquet({src}, hive_partitioning = false) WHERE {where}", params or []).fetchall()[0][0]
            if not hits:
                continue
            keep = self.arrow(f"SELECT * FROM read_parquet({src}, hive_partitioning = false) WHERE NOT ({where})", params)
            if keep.num_rows:
                atomic_write_parquet(keep.cast(pq.read_schema(path)), path)
            else:
                path.unlink()
            removed += int(hits)
        self._register_table_view(table)
        return removed

    # -- runs ------------------------------------------------------------------------------------------------
    @contextmanager
    def run(self, stage: str, config: dict[str, Any]) -> Iterator[Run]:
        """Record a stage execution in ``runs``; status becomes ok, failed or interrupted."""
        run = Run(self, new_run_id(), stage, config, config_hash(config))
        self.con.execute(
            "INSERT INTO runs (run_id, stage, config, config_hash, code_version, started_at, status, rows_written)"
            " VALUES (?, ?, ?, ?, ?, ?, 'running', 0)",
            [run.run_id, stage, canonical_json(config), run.config_hash, code_version(), _now()],
        )
        status, message = "ok", None
        try:
            yield run
        except KeyboardInterrupt:
            status, message = "interrupted", "KeyboardInterrupt"
            raise
        except AxwError as exc:
            status, message = "failed", str(exc)
            raise
        except Exception as exc:
            status, message = "failed", "".join(traceback.format_exception_only(type(exc), exc)).strip()
            raise
        finally:
            self.con.execute(
                "UPDATE runs SET finished_at = ?, status = ?, rows_written = ?, message = ? WHERE run_id = ?",
                [_now(), status, run.rows_written, message, run.run_id],
            )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)

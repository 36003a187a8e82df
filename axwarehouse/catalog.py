"""The warehouse catalog: views over Parquet folders, atomic writes, the writer lock and the ``runs`` ledger.

Layout (for ``--catalog ./catalog.duckdb``)::

    catalog.duckdb            views for the plain DuckDB CLI (paths relative to this folder)
    warehouse/<table>/_schema.parquet            zero rows: the table's columns, so its view always binds
    warehouse/<table>/[k=v/]part-<run>-<n>.parquet
    warehouse/run_events/…                        the runs ledger (start/finish events)
    warehouse/.writer.lock                        held by the one process writing (see writer_lock.py)

A table is a folder of Parquet files; its view is ``SELECT <columns> FROM read_parquet('<folder>/**/*.parquet',
union_by_name = true)``. A :class:`Catalog` never opens ``catalog.duckdb``: it reads through an in-memory DuckDB
connection whose table views are created over the warehouse folder found beside the catalog path at every open, so
a copied or moved warehouse reads its own files, readers never wait for or block a writer, and a notebook holding
``catalog.duckdb`` open blocks nobody. The derived views of ``sql/`` do not depend on the warehouse: they are created
once per process (see :func:`views_database`) and every open gets a cursor whose temporary table views they read.
``catalog.duckdb`` itself is rewritten (build a temp file, rename) only when view definitions change. Every Parquet
file appears by an atomic rename, so a killed stage leaves either whole files or nothing visible.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import sys
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from axwarehouse import schemas
from axwarehouse.errors import AxwError
from axwarehouse import run_ledger, sql_sandbox
from axwarehouse.lineage import canonical_json, code_version, config_hash, new_run_id
from axwarehouse.writer_lock import WriterLock, held_here, is_held

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
    import pyarrow.parquet as pq  # here: readers (status, sql) never pay for importing it
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp, compression="zstd", row_group_size=64 * 1024)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)



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


# suffixes of files that are data, not a catalog: `--catalog x.parquet` is a mistake, not a new catalog
_DATA_SUFFIXES = {".parquet", ".csv", ".tsv", ".json", ".jsonl", ".txt", ".arrow", ".feather", ".sql", ".wal"}
_FILE_IN_ERROR = re.compile(r"""['"]([^'"]+\.parquet)['"]""")
_TRANSIENT = ("No such file", "No files found", "Could not open file", "cannot open file")


def check_catalog_path(path: Path) -> None:
    """One-line errors for a ``--catalog`` that cannot be a catalog (a folder, a data file, another file type)."""
    if path.is_dir():
        raise AxwError(f"--catalog {path} is a folder; give the catalog file, e.g. {path / DEFAULT_CATALOG}")
    if path.suffix.lower() in _DATA_SUFFIXES:
        raise AxwError(f"--catalog {path} names a {path.suffix} file, not a catalog; give a .duckdb path "
                       "(tables live as Parquet files in the warehouse folder beside it)")
    if path.is_file() and path.stat().st_size > 0:
        with open(path, "rb") as fh:
            head = fh.read(12)
        if head[8:12] != b"DUCK":
            raise AxwError(f"--catalog {path} exists but is not a DuckDB catalog file")


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
            t in text for t in _TRANSIENT):
        detail = first.split(": ", 1)[-1].replace(f"'{m.group(1)}'", "").replace(f'"{m.group(1)}"', "")
        return corrupt_file_message(m.group(1), " ".join(detail.split())[:120])
    return first


def _relation_error(exc: BaseException) -> AxwError:
    return AxwError(duckdb_error_line(exc))


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
# Catalog._one_footer_select): the one table whose file count grows with the number of concepts
ONE_FOOTER_TABLES = frozenset({"activations"})


def columns_tag(table: str) -> str:
    """8 hex digits naming the columns (in order) of ``table``'s current schema, carried in every data file's name:
    a file whose name has the current tag holds every current column, so its footer need not be read to bind."""
    names = ",".join(f.name for f in _table_schemas()[table])
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


def _table_schemas() -> dict[str, pa.Schema]:
    """Every table the warehouse holds: the data tables plus the runs ledger."""
    return {**schemas.TABLES, run_ledger.TABLE: run_ledger.RUN_EVENTS}


def empty_select(table: str, where: str = "false") -> str:
    """A query with ``table``'s columns and types (as DuckDB reads them from Parquet) and no rows."""
    cols = ", ".join(f'CAST(NULL AS {duckdb_type(f.type)}) AS "{f.name}"' for f in _table_schemas()[table])
    return f"SELECT {cols} FROM range(1) WHERE {where}"


def sql_files() -> list[Path]:
    """The ``sql/`` files: macros and derived views, created in name order (dependencies are retried)."""
    return sorted(SQL_DIR.glob("*.sql"))


def run_sql_files(con: duckdb.DuckDBPyConnection) -> None:
    """Execute every ``sql/`` file on ``con``, each view after the views it reads."""
    pending = sql_files()
    while pending:
        failed: list[tuple[Path, str]] = []
        for sql_file in pending:
            try:
                con.execute(sql_file.read_text())
            except (duckdb.CatalogException, duckdb.BinderException) as exc:  # depends on a view not
                # created yet, or one whose new definition comes later in this pass (columns changed)
                failed.append((sql_file, str(exc)))
        if len(failed) == len(pending):
            names = ", ".join(f"{p.name}: {msg.splitlines()[0]}" for p, msg in failed)
            raise AxwError(f"cannot create SQL views ({names})")
        pending = [p for p, _ in failed]


_SHARED: tuple[int, duckdb.DuckDBPyConnection] | None = None
_SHARED_LOCK = threading.Lock()


def _new_views_database() -> duckdb.DuckDBPyConnection:
    db = duckdb.connect(":memory:")
    builder = db.cursor()
    try:
        # the derived views bind against stand-ins with each table's columns: every cursor later shadows them with
        # its own temporary views over a warehouse, and a view re-binds the names it reads at every query
        for table in _table_schemas():
            builder.execute(f'CREATE TEMP VIEW "{table}" AS {empty_select(table)}')
        run_sql_files(builder)
    except BaseException:
        db.close()
        raise
    finally:
        builder.close()
    return db


def views_database(private: bool = False) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB database holding the ``sql/`` macros and derived views, none of a table's.

    Creating the derived views binds each one, and with them nested several deep that took ~0.1 s: more than the
    rest of opening a catalog, paid by every ``axw`` command and every in-process open (hundreds in the tests). The
    views do not depend on the warehouse, so one database per process serves every :class:`Catalog`: each opens a
    cursor on it (its own connection, so its own temporary objects) and creates its table views there as temporary
    views, which the derived views read by name. ``private=True`` builds a database for one catalog alone — the SQL
    sandbox locks settings that are the database's, not a connection's. A forked child builds its own (the parent's
    DuckDB threads do not exist in it).
    """
    global _SHARED
    if private:
        return _new_views_database()
    with _SHARED_LOCK:
        if _SHARED is None or _SHARED[0] != os.getpid():
            _SHARED = (os.getpid(), _new_views_database())
        return _SHARED[1]


# catalog.duckdb files built in this process, by the digest of their view definitions: the definitions name the
# warehouse relative to the catalog's folder, so another warehouse with the same digest gets a copy of the bytes
# (~0.1 s of binding every view into a file saved per new catalog; a few hundred KiB each)
_CLI_FILES: dict[str, bytes] = {}

# catalog.duckdb holds view and macro definitions only, so it is written in the oldest storage format DuckDB 2.x
# writes (storage version 64, which every DuckDB from 1.0 reads); DuckDB's default, its newest format, opens in no
# 1.x client (the CLI, R and JDBC drivers users have). "v1.0.0" names that format: DuckDB's first stable one.
CLI_STORAGE_VERSION = "v1.0.0"


class Catalog:
    """Open a catalog. Use as a context manager.

    ``read_only=False`` takes the warehouse's writer lock until :meth:`close` (waiting at most ``wait`` seconds,
    None = no limit, for another writer). ``sandbox=True`` locks the connection down for user SQL: no file or
    database access outside the warehouse (plus ``allow_files`` folders), no extension install, configuration
    locked; see :mod:`axwarehouse.sql_sandbox` and :meth:`user_query`.

    ``con`` is a cursor on the process's views database (:func:`views_database`): the table views are its own
    temporary views and go with :meth:`close`; an object created on it without ``TEMP`` lands in that shared
    database and outlives the catalog (create your own tables and views as ``TEMP``).
    """

    def __init__(self, path: str | Path | None = None, *, read_only: bool = False, create: bool = True,
                 wait: float | None = None, sandbox: bool = False, allow_files: Sequence[str | Path] = ()):
        self.path = Path(path) if path is not None else default_catalog_path()
        self.path = self.path.resolve()
        check_catalog_path(self.path)
        self.warehouse = warehouse_dir_for(self.path)
        self.read_only = read_only
        if not self.path.exists() and not self.warehouse.is_dir():
            if read_only or not create:
                raise AxwError(f"no catalog at {self.path} (run a stage such as `axw import-axbench` first)")
            if not self.path.parent.is_dir():
                raise AxwError(f"catalog folder {self.path.parent} does not exist")
        self._seq = 0
        self._bodies: dict[str, str] = {}
        self.damaged: dict[str, str] = {}  # table -> one-line message, for tables with an unreadable file
        self._lock: WriterLock | None = None
        self._con: duckdb.DuckDBPyConnection | None = None
        try:
            if not read_only:
                if not os.access(self.path.parent, os.W_OK):
                    raise AxwError(f"catalog folder {self.path.parent} is not writable; writing commands need "
                                   "write access (status, sql, leaderboard and report only read it)")
                try:
                    self.warehouse.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise AxwError(f"cannot create warehouse folder {self.warehouse} ({exc.strerror})") from None
                first_writer = not held_here(self.warehouse)  # not a second writer catalog of this process
                self._lock = WriterLock(self.warehouse, wait=wait)
                self._lock.acquire()
                self._ensure_schema_files()
                if first_writer:  # (a second one must not touch the staging of a Ray run this process drives)
                    self._settle_staging()
            self._connect(private=sandbox)
            self.refresh_views()
            self._settle_unfinished_runs()
            if not read_only:
                self._write_cli_catalog()
            if sandbox:
                self._lock_down([self.warehouse, *allow_files])
        except BaseException:
            self.close()
            raise

    # -- lifecycle -------------------------------------------------------------------------------------------
    # tables written since their view was last bound: re-bound on the next use of the connection, not per write
    _stale: frozenset[str] | set[str] = frozenset()
    _private_db: duckdb.DuckDBPyConnection | None = None  # the sandbox's own database (see views_database)
    _hidden: tuple[str, ...] = ()  # file-name prefixes of commits in progress, left out of views (hidden_prefixes)

    @property
    def con(self) -> duckdb.DuckDBPyConnection | None:
        """The in-memory DuckDB connection, every view of a table written since its last use re-bound first.

        Binding a table's view reads the footer of each of its files (``union_by_name``), so binding it after every
        append made a stage that writes k files pay O(k²): ~1,500 activation files at Concept500 cost minutes.
        """
        if self._stale and self._con is not None:
            stale, self._stale = self._stale, frozenset()
            self._hidden = hidden_prefixes(self.warehouse)
            for table in sorted(stale):
                self._register_table_view(table)
        return self._con

    @con.setter
    def con(self, value: duckdb.DuckDBPyConnection | None) -> None:
        self._con = value

    def mark_written(self, table: str) -> None:
        """Files of ``table`` changed: its view is re-bound before the next query."""
        self._stale = self._stale | {table}

    def _connect(self, private: bool = False) -> None:
        """A cursor on the process's views database (``private``: on a database of this catalog's own)."""
        db = views_database(private)
        if private:
            self._private_db = db
        self.con = db.cursor()

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None
        if self._private_db is not None:
            self._private_db.close()
            self._private_db = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def commit_lock(self) -> Iterator[None]:
        """Hold the writer lock while committing files (re-entrant: a writable catalog already holds it)."""
        if self.read_only:
            raise AxwError("catalog is open read-only")
        with WriterLock(self.warehouse):
            yield

    def _settle_staging(self) -> None:
        """Finish or undo what a dead writer left in ``_staging`` before any stage computes what is missing (so a
        re-run, on one process or on Ray, neither recomputes a committed shard nor later sees it twice)."""
        if (self.warehouse / STAGING).is_dir():
            from axwarehouse.staging import settle_staging  # pyarrow.parquet and the staging code: writers only
            settle_staging(self)

    # -- views -----------------------------------------------------------------------------------------------
    def table_dir(self, table: str) -> Path:
        return self.warehouse / table

    def table_files(self, table: str) -> list[Path]:
        """The table's data files (its zero-row schema file excluded)."""
        root = self.table_dir(table)
        if not root.exists():
            return []
        return sorted(p for p in root.rglob("*.parquet") if not (p.name == SCHEMA_FILE and p.parent == root))

    def _ensure_schema_files(self) -> None:
        """Write ``<table>/_schema.parquet`` (zero rows) where missing or out of date (writers only)."""
        import pyarrow.parquet as pq
        for table, schema in _table_schemas().items():
            path = self.table_dir(table) / SCHEMA_FILE
            try:
                if path.exists() and pq.read_schema(path).remove_metadata().equals(schema.remove_metadata()):
                    continue
            except (OSError, pa.ArrowException):
                pass  # unreadable: rewrite it, it holds no rows
            try:
                atomic_write_parquet(schema.empty_table(), path)
            except OSError as exc:
                raise AxwError(f"warehouse folder {self.warehouse} is not writable ({exc.strerror}); writing "
                               "commands need write access (status, sql, leaderboard and report only read it)"
                               ) from None

    def _select(self, table: str, folder: str) -> str:
        cols = ", ".join(f'"{f.name}"' for f in _table_schemas()[table])
        glob = _sql_str(folder.rstrip("/") + "/**/*.parquet")
        return f"SELECT {cols} FROM read_parquet({glob}, union_by_name = true, hive_partitioning = false)"

    def _view_sql(self, table: str, folder: str) -> str:
        return f'CREATE OR REPLACE VIEW "{table}" AS {self._select(table, folder)}'

    def _one_footer_select(self, table: str) -> str | None:
        """The view body that binds from the schema file's footer alone, when every data file is known to hold the
        current columns (its name carries :func:`columns_tag`); None otherwise.

        Binding with ``union_by_name`` reads every file's footer: for ``activations`` (files per concept partition,
        ~1,500 at Concept500) that made opening a catalog — and every view created over the table — cost O(files),
        over a second at 500 concepts. Without it DuckDB takes the columns from the first file (the zero-row schema
        file) and matches the others by name, casting each file's fixed-size act_bf16 list to the schema's list.
        Only tables listed in ``ONE_FOOTER_TABLES``: the others have a few files per run, and reading their footers
        at open also reports a damaged file up front (a damaged activations file is reported by the query that
        scans it, and by `axw doctor`).
        """
        if table not in ONE_FOOTER_TABLES:
            return None
        root = self.table_dir(table)
        schema_file = root / SCHEMA_FILE
        if not schema_file.exists():
            return None
        suffix = f".{columns_tag(table)}.parquet"
        n = 0
        for folder, _, names in os.walk(root):  # names only: no footer, no Path per file (thousands of files)
            for name in names:
                if name.endswith(".parquet") and not (name == SCHEMA_FILE and folder == str(root)):
                    if not name.endswith(suffix):
                        return None
                    n += 1
        if not n:
            return None
        cols = ", ".join(f'"{f.name}"' for f in _table_schemas()[table])
        glob = _sql_str(str(root / "**" / "*.parquet"))
        return (f"SELECT {cols} FROM read_parquet([{_sql_str(str(schema_file))}, {glob}], union_by_name = false, "
                "hive_partitioning = false)")

    def _visible_files(self, table: str) -> list[Path] | None:
        """The table's files (its schema file first) less those of commits in progress, or None when none is
        hidden (the view then reads the folder's glob)."""
        if not self._hidden:
            return None
        files = self.table_files(table)
        keep = [p for p in files if not p.name.startswith(self._hidden)]
        if len(keep) == len(files):
            return None
        schema_file = self.table_dir(table) / SCHEMA_FILE
        return ([schema_file] if schema_file.exists() else []) + keep

    def _register_table_view(self, table: str) -> None:
        schema = _table_schemas()[table]
        root = self.table_dir(table)
        visible = self._visible_files(table)
        fast = self._one_footer_select(table) if visible is None else None
        if fast is not None:
            body = fast
        elif (not (root / SCHEMA_FILE).exists() and not self.table_files(table)) or visible == []:
            body = empty_select(table)
        else:
            files = (_sql_str(str(root / "**" / "*.parquet")) if visible is None
                     else f"[{', '.join(_sql_str(str(p)) for p in visible)}]")
            source = f"read_parquet({files}, union_by_name = true, hive_partitioning = false)"
            names = ", ".join(f'"{f.name}"' for f in schema)
            try:
                try:
                    body = f"SELECT {names} FROM {source}"
                    self.con.execute(f'CREATE OR REPLACE TEMP VIEW "{table}" AS {body}')
                    self._bodies[table] = body
                    return
                except duckdb.BinderException:
                    # an older warehouse (no schema file, or one from before a column was added): columns a file
                    # lacks read as NULL (tables grow columns)
                    have = {r[0] for r in self.con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}
                    cols = ", ".join(f'"{f.name}"' if f.name in have
                                     else f'CAST(NULL AS {duckdb_type(f.type)}) AS "{f.name}"' for f in schema)
                    body = f"SELECT {cols} FROM {source}"
            except (duckdb.InvalidInputException, duckdb.IOException) as exc:
                body = self._damaged_select(table, exc)
        self._bodies[table] = body
        self.con.execute(f'CREATE OR REPLACE TEMP VIEW "{table}" AS {body}')

    def _damaged_select(self, table: str, exc: BaseException) -> str:
        """A table with a damaged file: its view reads the good files plus one row whose every column (and its
        filter) raises the one-line message, so any query that reads the table fails naming the file, instead of
        silently missing its rows; other tables still work."""
        msg = _sql_str(duckdb_error_line(exc))
        schema = _table_schemas()[table]
        good = []
        for path in self.table_files(table) + [self.table_dir(table) / SCHEMA_FILE]:
            if path.name.startswith(self._hidden):
                continue
            try:
                self.con.execute(f"SELECT 1 FROM read_parquet({_sql_str(str(path))}) LIMIT 0")
                good.append(_sql_str(str(path)))
            except duckdb.Error:
                continue
        boom = ", ".join(f'CAST(error({msg}) AS {duckdb_type(f.type)}) AS "{f.name}"' for f in schema)
        body = f"SELECT {boom} FROM range(1) WHERE error({msg}) IS NULL"
        if good:
            try:
                cols = ", ".join(f'"{f.name}"' for f in schema)
                self.con.execute(f"DESCRIBE SELECT {cols} FROM read_parquet([{', '.join(good)}], "
                                 "union_by_name = true, hive_partitioning = false)")
                body = (f"SELECT {cols} FROM read_parquet([{', '.join(good)}], union_by_name = true, "
                        f"hive_partitioning = false) UNION ALL {body}")
            except duckdb.Error:
                pass
        self.damaged[table] = duckdb_error_line(exc)
        return body

    def refresh_views(self) -> None:
        """Register every table's view (a temporary view of this connection; the ``sql/`` views read them by name)."""
        self._stale = frozenset()
        self._hidden = hidden_prefixes(self.warehouse)
        for table in _table_schemas():
            self._register_table_view(table)

    # -- catalog.duckdb for the plain DuckDB CLI ----------------------------------------------------------------
    def _cli_definitions(self) -> str:
        rel = os.path.relpath(self.warehouse, self.path.parent)
        parts = [self._view_sql(t, f"{rel}/{t}") + ";" for t in _table_schemas()]
        parts += [p.read_text() for p in sql_files()]
        # the format is part of the definitions: a file written in another format is rebuilt
        return "\n".join([f"-- storage_compatibility_version {CLI_STORAGE_VERSION}", *parts])

    def _write_cli_catalog(self) -> None:
        """(Re)build ``catalog.duckdb`` when its view definitions changed: a temp file renamed over the old one, so a
        process holding the old file open (a notebook) keeps reading it and blocks nothing."""
        defs = self._cli_definitions()
        digest = hashlib.sha256(defs.encode()).hexdigest()
        stamp = self.warehouse / ".catalog-views.sha256"
        try:
            if self.path.exists() and stamp.read_text().strip() == digest:
                return
        except OSError:
            pass
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.unlink(missing_ok=True)
        try:
            self._migrate_old_runs()
            built = _CLI_FILES.get(digest)
            if built is not None:
                tmp.write_bytes(built)
            else:
                con = duckdb.connect(str(tmp), config={"storage_compatibility_version": CLI_STORAGE_VERSION})
                try:
                    # relative globs resolve against the catalog's folder (the CLI resolves them against its cwd)
                    con.execute(f"SET file_search_path = {_sql_str(str(self.path.parent))}")
                    for t in _table_schemas():
                        con.execute(self._view_sql(t, f"{os.path.relpath(self.warehouse, self.path.parent)}/{t}"))
                    run_sql_files(con)
                finally:
                    con.close()
                _CLI_FILES[digest] = tmp.read_bytes()
            os.replace(tmp, self.path)
            Path(str(self.path) + ".wal").unlink(missing_ok=True)
            atomic_write_text(stamp, digest)
        except (duckdb.Error, OSError, AxwError) as exc:
            tmp.unlink(missing_ok=True)
            print(f"note: could not update {self.path.name} for the DuckDB CLI ({duckdb_error_line(exc)}); "
                  "axw reads the warehouse directly", file=sys.stderr)

    def _migrate_old_runs(self) -> None:
        """Copy the ``runs`` table of a catalog.duckdb written before the ledger moved to Parquet into run_events."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        try:
            old = duckdb.connect(str(self.path), read_only=True)
        except duckdb.Error:
            return
        try:
            if not old.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'runs'").fetchall()[0][0]:
                return
            rows = old.execute("SELECT run_id, stage, config, config_hash, code_version, started_at, finished_at,"
                               " status, rows_written, message FROM runs").fetchall()
        finally:
            old.close()
        known = {r[0] for r in self.con.execute(f"SELECT DISTINCT run_id FROM {run_ledger.TABLE}").fetchall()}
        events = []
        for run_id, stage, cfg, chash, code, start, end, status, rows, msg in rows:
            if run_id in known:
                continue
            base = {"run_id": run_id, "stage": stage, "config": cfg, "config_hash": chash, "code_version": code,
                    "pid": None, "host": None, "proc_start": None, "message": None, "rows_written": None,
                    "status": None}
            events.append({**base, "event": "start", "event_at": start})
            if status != "running":
                events.append({**base, "event": "finish", "event_at": end or start, "status": status,
                               "rows_written": rows, "message": msg})
            else:  # the old ledger's runs left 'running' by a killed process
                events.append({**base, "event": "finish", "event_at": start, "status": "interrupted",
                               "rows_written": rows, "message": "left running in the old ledger"})
        if events:
            atomic_write_parquet(pa.Table.from_pylist(events, schema=run_ledger.RUN_EVENTS),
                                 self.table_dir(run_ledger.TABLE) / "part-migrated-runs.parquet")
            self._register_table_view(run_ledger.TABLE)

    # -- runs whose process is gone ----------------------------------------------------------------------------
    def _settle_unfinished_runs(self) -> None:
        """Mark runs whose process is gone as interrupted, with the rows they wrote: persisted by a writer, shown
        (not written) by a reader."""
        try:
            open_runs = self.con.execute(
                "SELECT run_id, stage, config, config_hash, code_version, pid, host, proc_start FROM run_events "
                "WHERE event = 'start' AND run_id NOT IN (SELECT run_id FROM run_events WHERE event = 'finish')"
            ).fetchall()
        except duckdb.Error:
            return  # a damaged ledger file: `axw doctor` reports it
        if not open_runs:
            return
        active = is_held(self.warehouse)
        dead = [r for r in open_runs if r[0] and run_ledger.is_dead(r[5], r[6], r[7], active)]
        if not dead:
            return
        ids = [r[0] for r in dead]
        counts = dict.fromkeys(ids, 0)
        for table in schemas.TABLES:
            try:
                for run_id, n in self.con.execute(
                        f'SELECT run_id, count(*) FROM "{table}" WHERE run_id IN (SELECT unnest(?)) GROUP BY 1',
                        [ids]).fetchall():
                    counts[run_id] += int(n)
            except duckdb.Error:
                continue
        events = []
        for run_id, stage, cfg, chash, code, pid, host, _ in dead:
            msg = f"process {pid} on {host} ended without finishing (killed?)"
            ev = run_ledger.event("finish", run_id, stage, cfg, chash, code, "interrupted", counts[run_id], msg)
            events.append(ev)
        table = pa.concat_tables(events)
        if not self.read_only and self._lock is not None:
            atomic_write_parquet(table, self.table_dir(run_ledger.TABLE) / f"part-settled-{new_run_id()}.parquet")
            self._register_table_view(run_ledger.TABLE)
        else:
            self.con.register("_settled_run_events", table)
            self.con.execute(f'CREATE OR REPLACE TEMP VIEW "{run_ledger.TABLE}" AS {self._bodies[run_ledger.TABLE]} '
                             "UNION ALL BY NAME SELECT * FROM _settled_run_events")

    # -- reading ---------------------------------------------------------------------------------------------
    def _retry(self, fn):
        """Run ``fn``; a file that vanished between listing and reading (a writer replaced it) is retried."""
        for attempt in range(6):
            try:
                return fn()
            except duckdb.IOException as exc:
                if attempt == 5 or not any(t in str(exc) for t in _TRANSIENT):
                    raise
                time.sleep(0.05 * 2 ** attempt)
        raise AssertionError("unreachable")

    def sql(self, query: str, params: Sequence[Any] | None = None) -> duckdb.DuckDBPyRelation:
        return self.con.sql(query, params=params) if params else self.con.sql(query)

    def arrow(self, query: str, params: Sequence[Any] | None = None) -> pa.Table:
        def go() -> pa.Table:
            rel = self.con.sql(query, params=params) if params else self.con.sql(query)
            return rel.to_arrow_table()
        return self._retry(go)

    def count(self, table: str, where: str = "true", params: Sequence[Any] | None = None) -> int:
        return self._retry(lambda: int(self.con.execute(f'SELECT count(*) FROM "{table}" WHERE {where}',
                                                        params or []).fetchall()[0][0]))

    # -- user SQL ----------------------------------------------------------------------------------------------
    def _lock_down(self, read_dirs: Sequence[str | Path]) -> None:
        sql_sandbox.lock_down(self.con, read_dirs)
        self._sandboxed = True

    def user_query(self, query: str) -> duckdb.DuckDBPyRelation:
        """Run one read-only statement of user SQL (see :mod:`axwarehouse.sql_sandbox` for what passes: SELECT, or
        a plain EXPLAIN of one, holding no write). Combined with the sandbox (open with ``sandbox=True``) a query
        reads nothing outside the warehouse and the ``allow_files`` folders."""
        statement = sql_sandbox.read_only_statement(self.con, query)
        try:
            return self._retry(lambda: self.con.sql(statement))
        except duckdb.Error as exc:
            raise AxwError(f"SQL error: {duckdb_error_line(exc)}") from None

    # -- writing ---------------------------------------------------------------------------------------------
    def _conform(self, table: str, data: pa.Table, run: Run) -> pa.Table:
        return conform_table(table, data, run.run_id, run.config_hash)

    def _writable(self) -> None:
        if self.read_only:
            raise AxwError("catalog is open read-only")

    def append(self, table: str, data: pa.Table, run: Run) -> int:
        """Append rows (split by partition values) as new Parquet files, each written atomically."""
        self._writable()
        if data.num_rows == 0:
            return 0
        data = self._conform(table, data, run)
        with self.commit_lock():
            for folder_parts, sub in partition_groups(table, data):
                folder = self.table_dir(table).joinpath(*folder_parts)
                self._seq += 1
                atomic_write_parquet(sub, folder / data_file_name(table, f"part-{run.run_id}-{self._seq:05d}"))
        self.mark_written(table)
        return data.num_rows

    def delete_where(self, table: str, where: str, params: Sequence[Any] | None = None) -> int:
        """Remove rows matching ``where`` by rewriting (atomically) only the files that contain them."""
        import pyarrow.parquet as pq
        self._writable()
        removed = 0
        with self.commit_lock():
            for path in self.table_files(table):
                src = _sql_str(str(path))
                hits = self.con.execute(f"SELECT count(*) FROM read_parquet({src}, hive_partitioning = false) "
                                        f"WHERE {where}", params or []).fetchall()[0][0]
                if not hits:
                    continue
                keep = self.arrow(f"SELECT * FROM read_parquet({src}, hive_partitioning = false) WHERE NOT ({where})",
                                  params)
                if keep.num_rows:
                    atomic_write_parquet(keep.cast(pq.read_schema(path)), path)
                else:
                    path.unlink()
                removed += int(hits)
        self.mark_written(table)
        return removed

    # -- runs ------------------------------------------------------------------------------------------------
    def _event(self, table: pa.Table, run_id: str, kind: str) -> None:
        with self.commit_lock():
            atomic_write_parquet(table, self.table_dir(run_ledger.TABLE) / f"part-{run_id}-{kind}.parquet")
        self.mark_written(run_ledger.TABLE)

    @contextmanager
    def run(self, stage: str, config: dict[str, Any]) -> Iterator[Run]:
        """Record a stage execution in ``runs`` (start and finish events); status becomes ok, failed or interrupted
        (also when the process is killed: see run_ledger)."""
        self._writable()
        run = Run(self, new_run_id(), stage, config, config_hash(config))
        cfg_json = canonical_json(config)
        self._event(run_ledger.event("start", run.run_id, stage, cfg_json, run.config_hash, code_version()),
                    run.run_id, "start")
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
            self._event(run_ledger.event("finish", run.run_id, stage, cfg_json, run.config_hash, code_version(),
                                         status, run.rows_written, message), run.run_id, "finish")


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)

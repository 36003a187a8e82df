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

import hashlib
import os
import sys
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from axwarehouse import run_ledger, schemas, sql_sandbox
from axwarehouse.errors import AxwError
from axwarehouse.lineage import new_run_id
from axwarehouse.table_views import WarehouseReader, run_sql_files, sql_files
from axwarehouse.table_writes import Run, TableWrites
from axwarehouse.warehouse_files import (SCHEMA_FILE, STAGING, TRANSIENT, atomic_write_parquet, atomic_write_text,
                                         duckdb_error_line, fsync_dir, sql_str, table_schemas)
from axwarehouse.writer_lock import WriterLock, held_here, is_held

_sql_str, _fsync_dir, _table_schemas, _TRANSIENT = sql_str, fsync_dir, table_schemas, TRANSIENT

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


# suffixes of files that are data, not a catalog: `--catalog x.parquet` is a mistake, not a new catalog
_DATA_SUFFIXES = {".parquet", ".csv", ".tsv", ".json", ".jsonl", ".txt", ".arrow", ".feather", ".sql", ".wal"}


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


# catalog.duckdb files built in this process, by the digest of their view definitions: the definitions name the
# warehouse relative to the catalog's folder, so another warehouse with the same digest gets a copy of the bytes
# (binding every view into a new file costs more than the copy; a few hundred KiB each; bench/catalog_open.py)
_CLI_FILES: dict[str, bytes] = {}

# catalog.duckdb holds view and macro definitions only, so it is written in the oldest storage format DuckDB 2.x
# writes (storage version 64, which every DuckDB from 1.0 reads); DuckDB's default, its newest format, opens in no
# 1.x client (the CLI, R and JDBC drivers users have). "v1.0.0" names that format: DuckDB's first stable one.
CLI_STORAGE_VERSION = "v1.0.0"


class Catalog(WarehouseReader):
    """Open a catalog. Use as a context manager.

    ``read_only=False`` takes the warehouse's writer lock until :meth:`close` (waiting at most ``wait`` seconds,
    None = no limit, for another writer). ``sandbox=True`` locks the connection down for user SQL: no file or
    database access outside the warehouse (plus ``allow_files`` folders), no extension install, configuration
    locked; see :mod:`axwarehouse.sql_sandbox` and :meth:`user_query`.

    Reading is :class:`~axwarehouse.table_views.WarehouseReader`'s (``con``, ``sql``, ``arrow``, ``count``: table
    views over the warehouse folder); writing is :class:`~axwarehouse.table_writes.TableWrites`'s (``run``,
    ``append``, ``delete_where``); the SQL sandbox is :mod:`axwarehouse.sql_sandbox`'s. A catalog adds the path,
    the writer lock, the ``runs`` ledger's upkeep and ``catalog.duckdb`` for other DuckDB clients.
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
        self.writes = TableWrites(self)
        self._lock: WriterLock | None = None
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
            super().__init__(self.warehouse, private=sandbox)
            self.refresh_views()
            self._settle_unfinished_runs()
            if not read_only:
                self._write_cli_catalog()
            if sandbox:
                self._lock_down([self.warehouse, *allow_files])
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        super().close()
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing (axwarehouse/table_writes.py) ---------------------------------------------------------------------
    def commit_lock(self) -> AbstractContextManager[None]:
        """Hold the writer lock while committing files (re-entrant: a writable catalog already holds it)."""
        return self.writes.commit_lock()

    def _settle_staging(self) -> None:
        """Finish or undo what a dead writer left in ``_staging`` before any stage computes what is missing (so a
        re-run, on one process or on Ray, neither recomputes a committed shard nor later sees it twice)."""
        if (self.warehouse / STAGING).is_dir():
            from axwarehouse.staging import settle_staging  # pyarrow.parquet and the staging code: writers only
            settle_staging(self)

    def append(self, table: str, data: pa.Table, run: Run) -> int:
        """Append rows (split by partition values) as new Parquet files, each written atomically."""
        return self.writes.append(table, data, run)

    def delete_where(self, table: str, where: str, params: Sequence[Any] | None = None) -> int:
        """Remove rows matching ``where`` by rewriting (atomically) only the files that contain them."""
        return self.writes.delete_where(table, where, params)

    def run(self, stage: str, config: dict[str, Any]) -> AbstractContextManager[Run]:
        """Record a stage execution in ``runs`` (start and finish events); status becomes ok, failed or interrupted
        (also when the process is killed: see run_ledger). Yields the :class:`Run` that writes rows."""
        return self.writes.run(stage, config)

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

"""Reading a warehouse: every table a view over its Parquet folder, on an in-memory DuckDB connection.

A view is ``SELECT <columns> FROM read_parquet('<folder>/**/*.parquet', union_by_name = true)`` created at open over
the folder found then, so a copied or moved warehouse reads its own files and readers never wait for a writer. A
table written since its view was bound is re-bound on the next query (:meth:`WarehouseReader.mark_written`). The
derived views of ``sql/`` do not depend on the warehouse: they are created once per process
(:func:`views_database`) and every reader gets a cursor whose temporary table views they read.

:class:`WarehouseReader` is what every catalog reads through: the driver's :class:`~axwarehouse.catalog.Catalog`
and a distributed worker's :class:`~axwarehouse.staging.WorkerCatalog`.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from axwarehouse.errors import AxwError
from axwarehouse.warehouse_files import (ONE_FOOTER_TABLES, SCHEMA_FILE, TRANSIENT, columns_tag, duckdb_error_line,
                                         duckdb_type, empty_select, hidden_prefixes, sql_str, table_schemas)

SQL_DIR = Path(__file__).resolve().parents[1] / "sql"


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
        for table in table_schemas():
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

    Creating the derived views binds each one, and with them nested several deep that costs more than the rest of
    opening a catalog, paid by every ``axw`` command and every in-process open (hundreds in the tests; see
    bench/catalog_open.py in BENCHMARKS.md). The views do not depend on the warehouse, so one database per process serves every :class:`Catalog`: each opens a
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


class WarehouseReader:
    """Queries over the tables of ``warehouse``. ``private=True``: on a views database of its own (the SQL sandbox
    locks settings that belong to a database).

    ``con`` is a cursor on the process's views database (:func:`views_database`): the table views are its own
    temporary views and go with :meth:`close`; an object created on it without ``TEMP`` lands in that shared
    database and outlives the reader (create your own tables and views as ``TEMP``).
    """

    def __init__(self, warehouse: Path, private: bool = False) -> None:
        self.warehouse = Path(warehouse)
        self._bodies: dict[str, str] = {}
        self.damaged: dict[str, str] = {}  # table -> one-line message, for tables with an unreadable file
        db = views_database(private)
        if private:
            self._private_db = db
        self._con = db.cursor()

    _con: duckdb.DuckDBPyConnection | None = None
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


    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None
        if self._private_db is not None:
            self._private_db.close()
            self._private_db = None

    # -- views -----------------------------------------------------------------------------------------------
    def table_dir(self, table: str) -> Path:
        return self.warehouse / table

    def table_files(self, table: str) -> list[Path]:
        """The table's data files (its zero-row schema file excluded)."""
        root = self.table_dir(table)
        if not root.exists():
            return []
        return sorted(p for p in root.rglob("*.parquet") if not (p.name == SCHEMA_FILE and p.parent == root))

    def _select(self, table: str, folder: str) -> str:
        cols = ", ".join(f'"{f.name}"' for f in table_schemas()[table])
        glob = sql_str(folder.rstrip("/") + "/**/*.parquet")
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
        cols = ", ".join(f'"{f.name}"' for f in table_schemas()[table])
        glob = sql_str(str(root / "**" / "*.parquet"))
        return (f"SELECT {cols} FROM read_parquet([{sql_str(str(schema_file))}, {glob}], union_by_name = false, "
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
        schema = table_schemas()[table]
        root = self.table_dir(table)
        visible = self._visible_files(table)
        fast = self._one_footer_select(table) if visible is None else None
        if fast is not None:
            body = fast
        elif (not (root / SCHEMA_FILE).exists() and not self.table_files(table)) or visible == []:
            body = empty_select(table)
        else:
            files = (sql_str(str(root / "**" / "*.parquet")) if visible is None
                     else f"[{', '.join(sql_str(str(p)) for p in visible)}]")
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
        msg = sql_str(duckdb_error_line(exc))
        schema = table_schemas()[table]
        good = []
        for path in self.table_files(table) + [self.table_dir(table) / SCHEMA_FILE]:
            if path.name.startswith(self._hidden):
                continue
            try:
                self.con.execute(f"SELECT 1 FROM read_parquet({sql_str(str(path))}) LIMIT 0")
                good.append(sql_str(str(path)))
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
        for table in table_schemas():
            self._register_table_view(table)

    # -- reading ---------------------------------------------------------------------------------------------
    def _retry(self, fn):
        """Run ``fn``; a file that vanished between listing and reading (a writer replaced it) is retried."""
        for attempt in range(6):
            try:
                return fn()
            except duckdb.IOException as exc:
                if attempt == 5 or not any(t in str(exc) for t in TRANSIENT):
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

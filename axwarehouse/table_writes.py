"""Writing a warehouse's tables: new rows as new Parquet files, deletes by rewriting the files that hold them, and
the ``runs`` ledger's start and finish events — each file written atomically, under the writer lock.

A :class:`~axwarehouse.catalog.Catalog` owns one :class:`TableWrites`; stages write through ``cat.run(...)``, whose
:class:`Run` stamps lineage on every row.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import pyarrow as pa

from axwarehouse import run_ledger
from axwarehouse.errors import AxwError
from axwarehouse.lineage import canonical_json, code_version, config_hash, new_run_id
from axwarehouse.warehouse_files import atomic_write_parquet, conform_table, data_file_name, partition_groups, sql_str
from axwarehouse.writer_lock import WriterLock


class Tables(Protocol):
    """What writing needs of the catalog: its folders, a query, and word that a table's files changed."""

    warehouse: Any
    read_only: bool
    con: Any  # a DuckDB connection

    def table_dir(self, table: str) -> Any: ...
    def table_files(self, table: str) -> list[Any]: ...
    def arrow(self, query: str, params: Sequence[Any] | None = None) -> pa.Table: ...
    def mark_written(self, table: str) -> None: ...
    def append(self, table: str, data: pa.Table, run: Run) -> int: ...


@dataclass
class Run:
    """One execution of a stage; stamps lineage on the rows it writes."""

    catalog: Tables
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


class TableWrites:
    """Appends, deletes and run events on the tables of ``tables`` (a catalog)."""

    def __init__(self, tables: Tables) -> None:
        self.tables = tables
        self._seq = 0

    def _writable(self) -> None:
        if self.tables.read_only:
            raise AxwError("catalog is open read-only")

    @contextmanager
    def commit_lock(self) -> Iterator[None]:
        """Hold the writer lock while committing files (re-entrant: a writable catalog already holds it)."""
        self._writable()
        with WriterLock(self.tables.warehouse):
            yield

    def append(self, table: str, data: pa.Table, run: Run) -> int:
        """Append rows (split by partition values) as new Parquet files, each written atomically."""
        self._writable()
        if data.num_rows == 0:
            return 0
        data = conform_table(table, data, run.run_id, run.config_hash)
        with self.commit_lock():
            for folder_parts, sub in partition_groups(table, data):
                folder = self.tables.table_dir(table).joinpath(*folder_parts)
                self._seq += 1
                atomic_write_parquet(sub, folder / data_file_name(table, f"part-{run.run_id}-{self._seq:05d}"))
        self.tables.mark_written(table)
        return data.num_rows

    def delete_where(self, table: str, where: str, params: Sequence[Any] | None = None) -> int:
        """Remove rows matching ``where`` by rewriting (atomically) only the files that contain them."""
        import pyarrow.parquet as pq

        self._writable()
        removed = 0
        with self.commit_lock():
            for path in self.tables.table_files(table):
                src = sql_str(str(path))
                hits = self.tables.con.execute(f"SELECT count(*) FROM read_parquet({src}, hive_partitioning = false) "
                                               f"WHERE {where}", params or []).fetchall()[0][0]
                if not hits:
                    continue
                keep = self.tables.arrow(f"SELECT * FROM read_parquet({src}, hive_partitioning = false) "
                                         f"WHERE NOT ({where})", params)
                if keep.num_rows:
                    atomic_write_parquet(keep.cast(pq.read_schema(path)), path)
                else:
                    path.unlink()
                removed += int(hits)
        self.tables.mark_written(table)
        return removed

    def _event(self, table: pa.Table, run_id: str, kind: str) -> None:
        with self.commit_lock():
            atomic_write_parquet(table, self.tables.table_dir(run_ledger.TABLE) / f"part-{run_id}-{kind}.parquet")
        self.tables.mark_written(run_ledger.TABLE)

    @contextmanager
    def run(self, stage: str, config: dict[str, Any]) -> Iterator[Run]:
        """Record a stage execution in ``runs`` (start and finish events); status becomes ok, failed or interrupted
        (also when the process is killed: see run_ledger)."""
        self._writable()
        run = Run(self.tables, new_run_id(), stage, config, config_hash(config))
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

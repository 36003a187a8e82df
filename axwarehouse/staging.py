"""Staged writes for distributed workers, and the commit protocol that makes a shard's rows visible at once.

A Ray worker must not open ``catalog.duckdb`` (a writer holds its lock). It runs the very same stage function
against a :class:`WorkerCatalog`: reads go through an in-memory DuckDB with the same views over the warehouse's
Parquet folders (so it sees what is committed), and ``run.write`` puts conformed part files under its shard's
staging folder instead of the table folders. A shard (a *commit unit*, ``<run>-s00003``) goes through these
states, each entered by one atomic rename of its folder::

    warehouse/_staging/<stage>/<unit>.tmp-<attempt>/<table>/<k=v>/part-<unit>-*.parquet   being written (a worker)
    warehouse/_staging/<stage>/<unit>/…                                                    complete (a worker)
    warehouse/_staging/<stage>/<unit>.commit/…     the driver's decision: its files are moving into the tables
    warehouse/_staging/<stage>/<unit>.done/        every file moved (only empty folders left, then deleted)

The driver commits a complete unit (:func:`commit_shard`): rename to ``.commit``, move each file to the same
relative path under the table folders (each an atomic rename, so a table keeps its partition layout), rename to
``.done``, delete. The files of a ``.commit`` unit carry its name (``part-<unit>-…``), and every reader the
warehouse knows — the catalog's views (:func:`~axwarehouse.warehouse_files.hidden_prefixes`) and the activation reader —
leaves them out while the ``.commit`` folder exists: the unit's rows appear, in every table at once, when it
becomes ``.done``. A writer that opens the catalog settles what a dead process left (:func:`settle_staging`, called
from :class:`~axwarehouse.catalog.Catalog` before any stage computes what is missing): ``.commit`` units roll
forward (moving a file that already moved is a no-op, so a kill during recovery is harmless too), every other
leftover rolls back — deleted, never visible; a complete unit the driver had not chosen is computed again.

Written here rather than taken from Ray: Ray schedules and retries the tasks, but it has no notion of our catalog's
files; this module is only the hand-over between a worker's Parquet files and the driver's commit.
"""

from __future__ import annotations

import os
import shutil
import signal
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from axwarehouse import schemas
from axwarehouse.errors import AxwError
from axwarehouse.lineage import config_hash
from axwarehouse.table_views import WarehouseReader
from axwarehouse.table_writes import Run
from axwarehouse.warehouse_files import (COMMITTING, STAGING, atomic_write_parquet, conform_table, data_file_name,
                                         partition_groups)
from axwarehouse.warehouse_files import fsync_dir as _fsync_dir

if TYPE_CHECKING:  # the catalog opens staging lazily (settling a dead writer's shards); no import back
    from axwarehouse.catalog import Catalog

FAULT_ENV = "AXW_FAULT_KILL_SHARD"  # tests only: "<shard>[:<marker file>]" kills that shard's worker mid-shard
COMMIT_FAULT_ENV = "AXW_FAULT_KILL_COMMIT"  # tests only: "<k>" kills the committing process after its k-th file move
DONE, ATTEMPT = ".done", ".tmp-"


def staging_root(warehouse: Path, stage: str) -> Path:
    return Path(warehouse) / STAGING / stage


@dataclass
class StagedRun:
    """What a stage function sees as its run inside a worker: ``write`` stages files, lineage is the driver's."""

    folder: Path
    run_id: str
    stage: str
    config: dict[str, Any]
    config_hash: str
    shard: int
    fault: str | None = None
    rows_written: int = 0
    files_written: int = 0
    written: dict[str, int] = field(default_factory=dict)

    def write(self, table: str, data: pa.Table) -> int:
        if data.num_rows == 0:
            return 0
        data = conform_table(table, data, self.run_id, self.config_hash)
        for folder_parts, sub in partition_groups(table, data):
            sub_dir = self.folder.joinpath(table, *folder_parts)
            self.files_written += 1
            atomic_write_parquet(sub, sub_dir / data_file_name(
                table, f"part-{unit_name(self.run_id, self.shard)}-{self.files_written:05d}"))
        self.rows_written += data.num_rows
        self.written[table] = self.written.get(table, 0) + data.num_rows
        self._maybe_die()
        return data.num_rows

    def _maybe_die(self) -> None:
        """Fault injection for tests: SIGKILL this worker after its first file (the shard is then half-written)."""
        if not self.fault:
            return
        shard, _, marker = self.fault.partition(":")
        if int(shard) != self.shard:
            return
        if marker:
            if Path(marker).exists():
                return  # only the first attempt dies: the retry runs to the end
            Path(marker).write_text("killed")
        os.kill(os.getpid(), signal.SIGKILL)


class WorkerCatalog(WarehouseReader):
    """The read side of a catalog over the same warehouse (a :class:`WarehouseReader`), without opening
    ``catalog.duckdb`` or taking the writer lock; writes are staged into ``folder`` (see the module docstring).
    Deleting is the driver's job: a worker cannot."""

    read_only = False

    def __init__(self, warehouse: Path, folder: Path, run_id: str, shard: int, fault: str | None = None):
        super().__init__(Path(warehouse))
        self.path = self.warehouse.parent / "(worker)"
        self.folder, self.run_id, self.shard, self.fault = Path(folder), run_id, shard, fault
        self.refresh_views()

    @contextmanager
    def run(self, stage: str, config: dict[str, Any]) -> Iterator[StagedRun]:
        yield StagedRun(self.folder, self.run_id, stage, config, config_hash(config), self.shard, self.fault)

    def append(self, table: str, data: pa.Table, run: Run) -> int:
        raise AxwError("internal: a distributed worker writes through run.write (staged), not Catalog.append")

    def delete_where(self, table: str, where: str, params=None) -> int:
        raise AxwError("this step deletes rows, which only a single process may do: run it without --workers / "
                       "--ray-address")

    def __enter__(self) -> WorkerCatalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def unit_name(run_id: str, shard: int) -> str:
    """The commit unit of one shard of a run; its files are named ``part-<unit>-…``."""
    return f"{run_id}-s{shard:05d}"


def shard_folder(warehouse: Path, stage: str, run_id: str, shard: int) -> Path:
    """Where a shard's files wait, complete, for the driver's commit."""
    return staging_root(warehouse, stage) / unit_name(run_id, shard)


def new_shard_folder(warehouse: Path, stage: str, run_id: str, shard: int) -> Path:
    """A fresh folder for one attempt at a shard (a retry never reuses a dead attempt's files)."""
    folder = staging_root(warehouse, stage) / f"{unit_name(run_id, shard)}{ATTEMPT}{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True)
    return folder


def complete_shard(folder: Path) -> Path:
    """Mark an attempt's files as the shard's result: one atomic rename (drops the ``.tmp-…`` suffix)."""
    done = folder.with_name(folder.name.split(ATTEMPT)[0])
    if done.exists():  # an earlier attempt completed (its worker died before reporting back): keep that one
        shutil.rmtree(folder, ignore_errors=True)
        return done
    for path in folder.rglob("*.parquet"):  # every file durable before the rename makes them count
        with open(path, "rb") as fh:
            os.fsync(fh.fileno())
    os.replace(folder, done)
    _fsync_dir(done.parent)
    return done


def _rename(src: Path, dst: Path) -> None:
    os.replace(src, dst)
    _fsync_dir(dst.parent)


def _maybe_die_committing(moved: int) -> None:
    """Fault injection for tests: SIGKILL this process (the driver) once it has moved ``$AXW_FAULT_KILL_COMMIT``
    files of a commit (0: right after deciding to commit, before the first move; one more than the files: after
    retiring the unit, before deleting its empty folders)."""
    at = os.environ.get(COMMIT_FAULT_ENV)
    if at is not None and int(at) == moved:
        os.kill(os.getpid(), signal.SIGKILL)


def _roll_forward(cat: Catalog, folder: Path) -> dict[str, int]:
    """Move every file still in a ``.commit`` unit to its table (idempotent), then retire the unit; rows per table."""
    rows: dict[str, int] = {}
    moved = 0
    for path in sorted(folder.rglob("*.parquet")):
        rel = path.relative_to(folder)
        table = rel.parts[0]
        if table not in schemas.TABLES:
            raise AxwError(f"internal: staged file for unknown table {table}")
        target = cat.table_dir(table) / Path(*rel.parts[1:])
        target.parent.mkdir(parents=True, exist_ok=True)
        rows[table] = rows.get(table, 0) + pq.read_metadata(path).num_rows
        _rename(path, target)
        moved += 1
        _maybe_die_committing(moved)
    done = folder.with_name(folder.name.removesuffix(COMMITTING) + DONE)
    _rename(folder, done)  # the unit's rows become visible to readers here, in every table at once
    _maybe_die_committing(moved + 1)
    shutil.rmtree(done, ignore_errors=True)
    for table in rows:  # re-bound on the next query (only the tables that got files)
        cat.mark_written(table)
    return rows


def commit_shard(cat: Catalog, folder: Path, run: Run | None = None) -> dict[str, int]:
    """Commit a complete shard into its tables (driver only, holding the writer lock); rows committed per table."""
    intent = folder.with_name(folder.name + COMMITTING)
    _rename(folder, intent)  # from here on the shard is committed: a kill rolls it forward, never back
    _maybe_die_committing(0)
    rows = _roll_forward(cat, intent)
    if run is not None:
        for table, n in rows.items():
            run.rows_written += n
            run.written[table] = run.written.get(table, 0) + n
    return rows


def settle_staging(cat: Catalog) -> tuple[int, int]:
    """What a dead process left in ``_staging`` (every stage's): roll forward the units it had decided to commit,
    delete everything else (attempts being written, complete shards it had not chosen, retired units). Called by a
    writer as it opens the catalog, before any stage computes what is missing. Returns (deleted, rolled forward)."""
    root = Path(cat.warehouse) / STAGING
    if not root.is_dir():
        return 0, 0
    dropped = forward = 0
    with cat.commit_lock():
        for stage_dir in sorted(p for p in root.iterdir() if p.is_dir()):
            for folder in sorted(stage_dir.iterdir()):
                if folder.name.endswith(COMMITTING):
                    _roll_forward(cat, folder)
                    forward += 1
                elif folder.is_dir():
                    shutil.rmtree(folder, ignore_errors=True)
                    dropped += 1
    return dropped, forward

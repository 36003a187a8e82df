"""Staged writes for distributed workers: part files land in a staging folder; only the driver commits them.

A Ray worker must not open ``catalog.duckdb`` (a writer holds its lock). It runs the very same stage function
against a :class:`WorkerCatalog`: reads go through an in-memory DuckDB with the same views over the warehouse's
Parquet folders (so it sees what is committed), and ``run.write`` puts conformed part files under its shard's
staging folder instead of the table folders::

    warehouse/_staging/<stage>/<run>-shard-00003.tmp-<attempt>/<table>/<k=v>/part-*.parquet   (being written)
    warehouse/_staging/<stage>/<run>-shard-00003/...                                           (complete)

A shard becomes complete by one atomic rename of its folder, after its last file is written. The driver then moves
its files into the table folders (:func:`commit_shard`, same relative paths, each an atomic rename) and deletes the
folder. Views never look under ``_staging``, so a shard in flight — or left half-written by a dead worker — is never
visible; :func:`recover` deletes such leftovers and rolls forward any complete shard whose commit was interrupted
(file names are unique per run and shard, so committing again never duplicates rows).

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
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from axwarehouse import schemas
from axwarehouse.catalog import (Catalog, Run, _fsync_dir, atomic_write_parquet, conform_table, data_file_name,
                                  partition_groups)
from axwarehouse.errors import AxwError
from axwarehouse.lineage import config_hash
from axwarehouse.table_views import WarehouseReader

STAGING = "_staging"
FAULT_ENV = "AXW_FAULT_KILL_SHARD"  # tests only: "<shard>[:<marker file>]" kills that shard's worker mid-shard


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
                table, f"part-{self.run_id}-s{self.shard:05d}-{self.files_written:05d}"))
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


def shard_folder(warehouse: Path, stage: str, run_id: str, shard: int) -> Path:
    """Where a shard's files wait, complete, for the driver's commit."""
    return staging_root(warehouse, stage) / f"{run_id}-shard-{shard:05d}"


def new_shard_folder(warehouse: Path, stage: str, run_id: str, shard: int) -> Path:
    """A fresh folder for one attempt at a shard (a retry never reuses a dead attempt's files)."""
    folder = shard_folder(warehouse, stage, run_id, shard).with_name(
        f"{run_id}-shard-{shard:05d}.tmp-{uuid.uuid4().hex[:8]}")
    folder.mkdir(parents=True)
    return folder


def complete_shard(folder: Path) -> Path:
    """Mark an attempt's files as the shard's result: one atomic rename (drops the ``.tmp-…`` suffix)."""
    done = folder.with_name(folder.name.split(".tmp-")[0])
    if done.exists():  # an earlier attempt completed (its worker died before reporting back): keep that one
        shutil.rmtree(folder, ignore_errors=True)
        return done
    for path in folder.rglob("*.parquet"):  # every file durable before the rename makes them count
        with open(path, "rb") as fh:
            os.fsync(fh.fileno())
    os.replace(folder, done)
    _fsync_dir(done.parent)
    return done


def commit_shard(cat: Catalog, folder: Path, run: Run | None = None) -> dict[str, int]:
    """Move a complete shard's files into their tables (driver only); rows committed per table."""
    rows: dict[str, int] = {}
    for path in sorted(folder.rglob("*.parquet")):
        rel = path.relative_to(folder)
        table = rel.parts[0]
        if table not in schemas.TABLES:
            raise AxwError(f"internal: staged file for unknown table {table}")
        target = cat.table_dir(table) / Path(*rel.parts[1:])
        target.parent.mkdir(parents=True, exist_ok=True)
        n = pq.read_metadata(path).num_rows
        os.replace(path, target)
        _fsync_dir(target.parent)
        rows[table] = rows.get(table, 0) + n
    shutil.rmtree(folder, ignore_errors=True)
    for table in rows:  # re-bound on the next query (only the tables that got files)
        cat.mark_written(table)
    if run is not None:
        for table, n in rows.items():
            run.rows_written += n
            run.written[table] = run.written.get(table, 0) + n
    return rows


def recover(cat: Catalog, stage: str, run: Run | None = None) -> tuple[int, int]:
    """Before a distributed stage runs: delete half-written attempts (never visible), commit complete shards whose
    commit was interrupted. Returns (attempts discarded, shards rolled forward)."""
    root = staging_root(cat.warehouse, stage)
    if not root.is_dir():
        return 0, 0
    dropped = forward = 0
    for folder in sorted(root.iterdir()):
        if ".tmp-" in folder.name:
            shutil.rmtree(folder, ignore_errors=True)
            dropped += 1
        elif folder.is_dir():
            commit_shard(cat, folder, run)
            forward += 1
    return dropped, forward

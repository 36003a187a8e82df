"""The ``runs`` ledger as append-only Parquet events: a ``start`` file when a stage begins, a ``finish`` file when
it ends (ok, failed or interrupted). The view ``runs`` (sql/runs.sql) pairs them.

A run with a start and no finish is ``running`` while its process lives, and ``interrupted`` once it is gone
(``kill -9``, power loss): every writing run holds the warehouse's writer lock, so when nobody holds it no run can
be running; when someone does, a run on this host whose pid is dead (or reused: the process start time is recorded
too) is interrupted. Its ``rows_written`` then counts the rows that carry its run id.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from pathlib import Path

import pyarrow as pa

from axwarehouse import schemas

TABLE = "run_events"
RUN_EVENTS = schemas._schema(  # noqa: SLF001 — same lineage columns as every table
    pa.field("event", pa.string(), nullable=False),  # start | finish
    pa.field("stage", pa.string()),
    pa.field("config", pa.string()),  # canonical JSON of the stage config
    pa.field("event_at", pa.timestamp("us")),
    pa.field("status", pa.string()),  # finish events: ok | failed | interrupted
    pa.field("rows_written", pa.int64()),
    pa.field("message", pa.string()),
    pa.field("pid", pa.int64()),
    pa.field("host", pa.string()),
    pa.field("proc_start", pa.int64()),  # process start time (clock ticks since boot) to detect pid reuse
)


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def process_start(pid: int) -> int | None:
    """Start time of process ``pid`` in clock ticks since boot (Linux /proc), None when unknown or gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    try:
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (IndexError, ValueError):
        return None


def process_alive(pid: int, proc_start: int | None) -> bool:
    """True when ``pid`` runs on this host and is the same process that recorded ``proc_start``."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if proc_start is not None:
        now_start = process_start(pid)
        if now_start is not None and now_start != proc_start:
            return False
    return True


def event(kind: str, run_id: str, stage: str, config_json: str, chash: str, code: str, status: str | None = None,
          rows: int | None = None, message: str | None = None) -> pa.Table:
    """One event row, conformed to RUN_EVENTS."""
    pid = os.getpid()
    row = {"event": kind, "stage": stage, "config": config_json, "event_at": now(), "status": status,
           "rows_written": rows, "message": message, "pid": pid, "host": socket.gethostname(),
           "proc_start": process_start(pid), "run_id": run_id, "config_hash": chash, "code_version": code}
    return pa.Table.from_pylist([row], schema=RUN_EVENTS)


def is_dead(pid: int | None, host: str | None, proc_start: int | None, writer_active: bool) -> bool:
    """Whether an unfinished run's process is gone (see the module docstring)."""
    if not writer_active:
        return True
    if host != socket.gethostname() or pid is None:
        return False  # another machine's process: trust the lock
    return not process_alive(int(pid), proc_start)

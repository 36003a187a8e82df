"""One writer at a time per warehouse: an ``fcntl`` lock on ``<warehouse>/.writer.lock`` that names its holder.

Readers never take it (they read Parquet files, which only ever appear or disappear by atomic rename). A writing
command holds it from opening the catalog to closing it, so the "what is missing" a stage computes at its start is
still true when it commits; a second writer waits its turn, printing once what holds the lock, and gives up after
``--wait SECONDS``. The kernel drops the lock when the holder's process ends (``kill -9`` included), so a dead
writer never blocks anyone. Written here rather than taken from a library because it must also answer "is anyone
writing right now?" (used to tell running runs from interrupted ones) and record the holder in the lock file.

The lock is re-entrant within one process (an ``fcntl.flock`` taken twice through two descriptors by the same
process would deadlock).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import socket
import sys
import threading
import time
from pathlib import Path

from axwarehouse.errors import AxwError

LOCK_NAME = ".writer.lock"
# the command line of this process as the CLI received it (set by cli.run; shown to a writer that has to wait)
CURRENT_COMMAND: str | None = None

_held: dict[str, list[int]] = {}  # lock path -> [fd, depth]
_guard = threading.Lock()


def lock_path(warehouse: Path) -> Path:
    return Path(warehouse) / LOCK_NAME


def _command() -> str:
    if CURRENT_COMMAND:
        return CURRENT_COMMAND
    return " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "python"


def holder_text(path: Path) -> str:
    """Who holds the lock, as recorded by the holder: "`axw train …` (pid N on HOST, since HH:MM:SS UTC)"."""
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "another process"
    return f"`{info.get('command', '?')}` (pid {info.get('pid', '?')} on {info.get('host', '?')}, since {info.get('since', '?')})"


def held_here(warehouse: Path) -> bool:
    """True when this process already holds the writer lock of ``warehouse``."""
    with _guard:
        return str(lock_path(warehouse)) in _held


def is_held(warehouse: Path) -> bool:
    """True when some process (this one included) holds the writer lock of ``warehouse``."""
    path = lock_path(warehouse)
    with _guard:
        if str(path) in _held:
            return True
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing drops the probe's shared lock
    return False


class WriterLock:
    """Context manager: hold the writer lock of ``warehouse``; wait at most ``wait`` seconds (None = no limit)."""

    def __init__(self, warehouse: Path, wait: float | None = None, echo=None):
        self.path = lock_path(warehouse)
        self.wait = wait
        self.echo = echo or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self._mine = False

    def acquire(self) -> None:
        key = str(self.path)
        with _guard:
            if key in _held:
                _held[key][1] += 1
                self._mine = True
                return
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o664)
        except OSError as exc:
            raise AxwError(f"warehouse folder {self.path.parent} is not writable ({exc.strerror}); writing commands "
                           "need write access (status, sql, leaderboard and report only read it)") from None
        started, told = time.monotonic(), False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                pass
            waited = time.monotonic() - started
            if self.wait is not None and waited >= self.wait:
                holder = holder_text(self.path)
                os.close(fd)
                raise AxwError(f"the catalog is still being written by {holder} after waiting {self.wait:g} s "
                               "(--wait SECONDS to wait longer)")
            if not told:
                limit = "no time limit" if self.wait is None else f"up to {self.wait:g} s"
                self.echo(f"waiting for the catalog: {holder_text(self.path)} is writing to it ({limit}; "
                          "see `axw --wait`)")
                told = True
            time.sleep(0.2)
        info = {"command": _command(), "pid": os.getpid(), "host": socket.gethostname(),
                "since": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        with _guard:
            _held[key] = [fd, 1]
        self._mine = True

    def release(self) -> None:
        if not self._mine:
            return
        self._mine = False
        key = str(self.path)
        with _guard:
            entry = _held.get(key)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] > 0:
                return
            del _held[key]
        fd = entry[0]
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass
        os.close(fd)  # drops the flock

    def __enter__(self) -> WriterLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

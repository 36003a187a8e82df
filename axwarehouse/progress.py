"""Progress of a long stage: a tqdm bar on a terminal, a plain log line about every 30 s otherwise.

A bar redraws in place, which a log file or a CI console cannot show (tqdm turns itself off there), so a stage run
from a script would print nothing for minutes. Without a terminal the same counts go out as whole lines —
``activations L9: 1,200/4,800 tok (25%), 310 tok/s, ETA 0:00:11`` — at most one every ``every`` seconds, and one
at the end when any was printed.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import time
from collections.abc import Callable
from typing import IO

LOG_EVERY_ENV = "AXW_PROGRESS_SECONDS"  # seconds between log lines when stderr is not a terminal
LOG_EVERY = 30.0


def _eta(seconds: float) -> str:
    return str(dt.timedelta(seconds=int(round(seconds))))


class Progress:
    """done/total of a stage, with rate and ETA, shown on ``stream`` (stderr by default).

    ``enabled=False`` shows nothing. ``every`` is the seconds between log lines off a terminal (default: the
    ``AXW_PROGRESS_SECONDS`` environment variable, else 30). ``clock`` is for tests.
    """

    def __init__(self, total: int, desc: str, unit: str = "it", *, enabled: bool = True,
                 stream: IO[str] | None = None, every: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.desc, self.unit, self.done = int(total), desc, unit, 0
        self.stream = stream if stream is not None else sys.stderr
        self.every = float(os.environ.get(LOG_EVERY_ENV, LOG_EVERY)) if every is None else every
        self.clock = clock
        self.started = self.last = clock()
        self.postfix = ""
        self.lines = 0
        self.bar = None
        if enabled and _is_terminal(self.stream):
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, desc=desc, unit=unit, file=self.stream, dynamic_ncols=True,
                            smoothing=0.1)
        self.log = enabled and self.bar is None

    def update(self, n: int = 1) -> None:
        """Count ``n`` more units done."""
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.log and self.clock() - self.last >= self.every:
            self._line()

    def add_total(self, n: int) -> None:
        """``n`` more units to do (stages that learn their work as they go)."""
        self.total += n
        if self.bar is not None:
            self.bar.total += n
            self.bar.refresh()

    def set_postfix(self, text: str) -> None:
        """Text shown after the counts (e.g. the method being fitted, tokens/s)."""
        self.postfix = text
        if self.bar is not None:
            self.bar.set_postfix_str(text)

    def line(self) -> str:
        """The log line for the counts so far."""
        elapsed = max(self.clock() - self.started, 1e-9)
        rate = self.done / elapsed
        pct = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        eta = f", ETA {_eta((self.total - self.done) / rate)}" if rate > 0 and self.total >= self.done else ""
        extra = f", {self.postfix}" if self.postfix else ""
        return (f"{self.desc}: {self.done:,}/{self.total:,} {self.unit}{pct}, {rate:,.1f} {self.unit}/s{eta}"
                f"{extra}")

    def _line(self) -> None:
        print(self.line(), file=self.stream, flush=True)
        self.last = self.clock()
        self.lines += 1

    def close(self) -> None:
        """End the bar; off a terminal, a last line when the stage was long enough to print any."""
        if self.bar is not None:
            self.bar.close()
        elif self.log and self.lines:
            self._line()
        self.log = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False

"""Benchmark: wall time of commands that load no model (`axw status`, `sql`, `leaderboard`, a no-op stage) as a user
runs them — a fresh process each time, imports included.

Not a test: it prints figures. Baseline, measured in the same run: a bare interpreter (`python -c pass`); the
ratio says how much of a command is our own startup and work. Usage::

    python bench/startup.py CATALOG [--repeat 5] [--noop "train --method diffmean"]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

CLI = [sys.executable, str(Path(__file__).resolve().parents[1] / "cli.py")]


def wall(cmd: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        res = subprocess.run(cmd, capture_output=True, text=True)
        times.append(time.perf_counter() - started)
        if res.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed: {res.stderr.strip()}")
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("catalog")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--noop", action="append", default=[],
                    help="a stage command with nothing to do, e.g. 'train --method diffmean' (repeatable)")
    args = ap.parse_args()
    base = wall([sys.executable, "-c", "pass"], args.repeat)
    commands = [["status"], ["sql", "SELECT count(*) FROM latent_scores"], ["leaderboard", "latent"],
                *[c.split() for c in args.noop]]
    print(f"baseline python -c pass: {base:.3f} s (median of {args.repeat})")
    for c in commands:
        t = wall([*CLI, "--catalog", args.catalog, *c], args.repeat)
        print(f"axw {' '.join(c):<45} {t:6.3f} s  ({t / base:5.1f}x bare python)")


if __name__ == "__main__":
    main()

"""Benchmark: opening a catalog in a process that has opened one before — what every in-process `axw` call after the
first pays (a notebook, a test, a driver that runs several stages).

Not a test: it prints figures. Baseline, measured in the same run: each open builds the ``sql/`` views in a database
of its own and binds every view into a new ``catalog.duckdb`` (what every open did before the views were shared per
process: a private database, the file-copy cache emptied). Three cases, best-of-``--rounds`` mean per open:
an existing catalog read-only, the same as a writer (writer lock, schema files checked), and a new catalog.

    python bench/catalog_open.py CATALOG [--opens 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from axwarehouse import catalog as catalog_module
from axwarehouse.catalog import Catalog
from axwarehouse.table_views import WarehouseReader


def per_open(make, opens: int, rounds: int, shared: bool) -> float:
    shared_init = WarehouseReader.__init__
    if not shared:  # the open as it was: a database of its own, every sql/ view bound again
        WarehouseReader.__init__ = lambda self, warehouse, private=False: shared_init(self, warehouse, private=True)
    try:
        best = float("inf")
        for _ in range(rounds):
            started = time.perf_counter()
            for _ in range(opens):
                if not shared:
                    catalog_module._CLI_FILES.clear()
                make().close()
            best = min(best, (time.perf_counter() - started) / opens)
        return best
    finally:
        WarehouseReader.__init__ = shared_init


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("catalog", type=Path, help="an existing catalog (its warehouse is copied to a temp folder)")
    ap.add_argument("--opens", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="axw-bench-open-"))
    try:
        shutil.copytree(catalog_module.warehouse_dir_for(args.catalog), work / "warehouse")
        shutil.copy(args.catalog, work / "catalog.duckdb")
        existing = work / "catalog.duckdb"
        fresh_root = work / "fresh"
        fresh_root.mkdir()
        counter = iter(range(10**9))

        def fresh() -> Catalog:
            folder = fresh_root / str(next(counter))
            folder.mkdir()
            return Catalog(folder / "catalog.duckdb")

        Catalog(existing, read_only=True).close()  # the process's views database exists before timing
        cases = {"existing, read-only": lambda: Catalog(existing, read_only=True),
                 "existing, writer": lambda: Catalog(existing),
                 "new catalog": fresh}
        print(f"{'case':<22} {'baseline ms':>12} {'shared ms':>10} {'speed-up':>9}")
        for name, make in cases.items():
            base = per_open(make, args.opens, args.rounds, shared=False)
            now = per_open(make, args.opens, args.rounds, shared=True)
            print(f"{name:<22} {base * 1e3:>12.1f} {now * 1e3:>10.1f} {base / now:>8.2f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Where `axw judge --judge proxy` spends its time: the judge re-run on a copy of a warehouse, every part timed.

Not a test: it prints seconds. The warehouse (e.g. a whole `axw demo`) is copied to a temporary folder and judged
again with another seed, so every rating and calibration is computed anew and the original is untouched; the
measuring model is loaded before the clock starts, as in `axw demo`, where steering has loaded it already. Parts:
the log-probability passes over the outputs, the calibration's unsteered answers and their passes, the concept
classifiers' fits, and the rest (selection, ratings, writes). Plain wall-clock timers around the judge's own
functions (a profiler's overhead would distort a judge made of many small calls).

    python bench/proxy_judge_parts.py DEMO_DIR [--seed 7] [--dtype auto]
"""

from __future__ import annotations

import argparse
import functools
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from axwarehouse.catalog import Catalog  # noqa: E402
from axwarehouse.judging import proxy_measures as pj  # noqa: E402
from axwarehouse.judging.config import JudgeConfig  # noqa: E402
from axwarehouse.model.loader import DEFAULT_MODEL, load, resolve_dtype  # noqa: E402
from axwarehouse.stages.judge import run_judge  # noqa: E402
from bench.cpu_probe import cpu_model, probe  # noqa: E402

SECONDS: dict[str, float] = defaultdict(float)
PARTS = [(pj, "measure_texts", "log-probability passes (outputs and calibration)"),
         (pj, "reference_answers", "calibration: unsteered answers generated"),
         (pj, "calibrate_lm", "calibration: their passes and thresholds"),
         (pj.ConceptClassifier, "fit", "concept classifiers fitted")]


def timed(owner, name: str, label: str) -> None:
    """Replace ``owner.name`` by a wrapper adding its wall time to ``SECONDS[label]``."""
    real = getattr(owner, name)

    @functools.wraps(real)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            SECONDS[label] += time.perf_counter() - start

    setattr(owner, name, wrapper)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("warehouse", type=Path, help="a folder holding catalog.duckdb and warehouse/ (e.g. axw demo's)")
    ap.add_argument("--seed", type=int, default=7, help="a seed the warehouse was not judged with")
    ap.add_argument("--dtype", default="auto")
    args = ap.parse_args()
    name, flags = cpu_model()
    dtype = resolve_dtype(args.dtype, "cpu")
    print(f"{name} ({flags}); {dtype}; matmul probe {probe(seconds=3.0, dtype=dtype, threads=None):.0f} GFLOP/s")
    load(DEFAULT_MODEL, dtype)
    for owner, fn, label in PARTS:
        timed(owner, fn, label)
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "w"
        shutil.copytree(args.warehouse, copy)
        with Catalog(copy / "catalog.duckdb") as cat:
            start = time.perf_counter()
            res = run_judge(cat, JudgeConfig(seed=args.seed, dtype=args.dtype), progress=False)
            total = time.perf_counter() - start
    print(res.summary())
    calibration = SECONDS[PARTS[2][2]]  # calibrate_lm's passes are inside measure_texts' total too
    outputs = SECONDS[PARTS[0][2]] - calibration
    rows = [("log-probability passes over the outputs", outputs),
            (PARTS[2][2], calibration), (PARTS[1][2], SECONDS[PARTS[1][2]]), (PARTS[3][2], SECONDS[PARTS[3][2]])]
    rows.append(("the rest", total - sum(s for _, s in rows)))
    print(f"judge total {total:.1f} s")
    for label, seconds in rows:
        print(f"  {label}: {seconds:.1f} s")


if __name__ == "__main__":
    main()

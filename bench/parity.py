"""Upstream parity on all ten Concept10 concepts: our per-concept latent AUROC beside upstream AxBench's own.

The test suite checks the concepts its end-to-end demo computes (tests/test_upstream_parity.py); this runs the
demo's latent half on all ten at layer 18 (or reads ``--catalog`` of a warehouse that holds them) and checks every
concept and the ten-concept DiffMean mean against the tolerance in axwarehouse/upstream_parity.py. Exits 1 when a
gap exceeds it.

    python bench/parity.py [--catalog path/to/catalog.duckdb]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from axwarehouse.catalog import Catalog  # noqa: E402
from axwarehouse.upstream_parity import gaps, ours, side_by_side, upstream  # noqa: E402
from axwarehouse.cli import run  # noqa: E402


def check(catalog: Path) -> list[str]:
    """Print the side-by-side table; return the gaps beyond the tolerance."""
    ref = upstream()
    tol = ref["tolerance"]
    with Catalog(catalog, read_only=True) as cat:
        mine = ours(cat)
    failures = []
    for method, theirs in ref["auroc"].items():
        got = mine.get(method, {})
        print(side_by_side(method, got, theirs))
        failures += [f"{method} concept {c}: gap {g:.4f}" for c, g in gaps(got, theirs).items()
                     if not g <= tol["per_concept"]]
    diffmean = [mine.get("diffmean", {}).get(c, float("nan")) for c in ref["auroc"]["diffmean"]]
    mean = sum(diffmean) / len(diffmean)
    print(f"diffmean mean over {len(diffmean)} concepts: ours {mean:.6f} upstream {ref['diffmean_mean']:.6f} "
          f"gap {abs(mean - ref['diffmean_mean']):.4f} (tolerance {tol['diffmean_mean_over_10']})")
    if not abs(mean - ref["diffmean_mean"]) <= tol["diffmean_mean_over_10"]:
        failures.append(f"diffmean mean: gap {abs(mean - ref['diffmean_mean']):.4f}")
    return failures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--catalog", type=Path, help="a warehouse holding the 10 concepts at layer 18 (default: build one)")
    args = ap.parse_args()
    if args.catalog:
        failures = check(args.catalog.resolve())
    else:
        argv = ["demo", "--no-steering", "--layer", str(upstream()["layer"])]
        with tempfile.TemporaryDirectory() as tmp:
            os.chdir(tmp)
            started = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                code = run(argv)
            if code:
                sys.exit(f"axw {' '.join(argv)} failed with exit {code}")
            print(f"axw {' '.join(argv)}: {time.perf_counter() - started:.0f}s")
            failures = check(Path(tmp) / "catalog.duckdb")
            os.chdir(ROOT)
    if failures:
        sys.exit("beyond tolerance: " + "; ".join(failures))
    print("every concept within tolerance")


if __name__ == "__main__":
    main()

"""The full `axw demo` (all 10 Concept10 concepts, latent and steering halves) as the README runs it — the end-to-end
run that the test suite checks on a 2-concept subset (tests/test_demo_embedded.py) — timed, then run again.

Not a test: it prints figures. The baseline is the first run in the same process: the second run's time is printed
as a ratio of it (everything is reused, so it should be a small fraction). The model cache is whatever
AXW_MODEL_CACHE / the platform cache holds; a first-ever run includes fetching the model.

    python bench/demo.py [--concepts 10] [--no-steering]
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

from axwarehouse.cli import run  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concepts", type=int, default=10)
    ap.add_argument("--no-steering", action="store_true")
    args = ap.parse_args()
    argv = ["demo", "--concepts", str(args.concepts)] + (["--no-steering"] if args.no_steering else [])
    seconds = []
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        for attempt in ("first", "second"):
            out = io.StringIO()
            started = time.perf_counter()
            with contextlib.redirect_stdout(out):
                code = run(argv)
            seconds.append(time.perf_counter() - started)
            if code:
                sys.exit(f"axw {' '.join(argv)} failed with exit {code}")
            if attempt == "first":
                print(out.getvalue())
        os.chdir(ROOT)
    print(f"axw {' '.join(argv)}: first run {seconds[0]:.0f}s, second run {seconds[1]:.1f}s "
          f"({seconds[1] / seconds[0]:.3f} of the first)")


if __name__ == "__main__":
    main()

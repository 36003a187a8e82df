"""Benchmark `axw report` on a warehouse (the demo one: Concept10, SmolLM2 L12, four methods).

Not a test: it prints figures. Measured in the same run:

* `axw report` wall time as a user runs it (a fresh process: imports, queries, pages, SVG/PNG exports), cold (empty
  Vega-bundle cache) and warm (cache filled), and with ``--no-images``;
* baseline: the same charts written the plain Altair way, ``chart.save(path, inline=True)`` one standalone HTML per
  chart (what a notebook user would do), timed in-process after the report's own queries.

    python bench/report.py CATALOG [--repeat 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _cli(catalog: Path, out: Path, cache: Path, *extra: str) -> float:
    env = dict(os.environ, XDG_CACHE_HOME=str(cache), PYTHONPATH=str(ROOT))
    started = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "cli.py"), "--catalog", str(catalog), "report", "--out", str(out),
                    *extra], check=True, env=env, capture_output=True)
    return time.perf_counter() - started


def baseline_altair_save(catalog: Path, out: Path) -> tuple[float, int]:
    """Seconds to save each exported chart of the report as its own inline HTML with Altair (charts prebuilt)."""
    from axwarehouse.catalog import Catalog
    from axwarehouse.report.latent_pages import geometry_page, latent_groups, roc_page

    with Catalog(catalog, read_only=True) as cat:
        groups = latent_groups(cat)
        specs = roc_page(cat, groups, [], {})[1] + geometry_page(cat, groups, [], 12)[1]
    started = time.perf_counter()
    for name, spec in specs:
        # the Altair way: a standalone inline HTML per chart
        _wrap(spec).save(str(out / f"{name}.html"), inline=True)
    return time.perf_counter() - started, len(specs)


def _wrap(spec: dict):
    import altair as alt

    cls = {"concat": alt.ConcatChart, "layer": alt.LayerChart, "facet": alt.FacetChart,
           "hconcat": alt.HConcatChart, "vconcat": alt.VConcatChart}
    return next((c for k, c in cls.items() if k in spec), alt.Chart).from_dict(spec)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("catalog", type=Path)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cold = _cli(args.catalog, tmp / "r-cold", tmp / "cache-cold")
        warm = min(_cli(args.catalog, tmp / f"r-warm{i}", tmp / "cache-cold") for i in range(args.repeat))
        noimg = min(_cli(args.catalog, tmp / f"r-noimg{i}", tmp / "cache-cold", "--no-images")
                    for i in range(args.repeat))
        pages = sum(1 for _ in (tmp / "r-cold").rglob("*.html"))
        (tmp / "alt").mkdir()
        base, n = baseline_altair_save(args.catalog, tmp / "alt")
    print(f"axw report, {pages} pages: cold {cold:.2f}s, warm {warm:.2f}s, warm --no-images {noimg:.2f}s")
    print(f"baseline: Altair chart.save(inline=True) of {n} charts (one HTML each): {base:.2f}s")
    print(f"ratio warm report / baseline: {warm / base:.2f}; cold report / baseline: {cold / base:.2f}")


if __name__ == "__main__":
    main()

"""Open report pages in headless Chromium with networking disabled, check every chart drew, save screenshots.

Network off: Chromium runs inside a fresh network namespace (``unshare -n``: no interface but a downed loopback)
when the kernel allows it, else with a proxy that points nowhere and a resolver that resolves nothing. A page
passes when the number of rendered Vega SVGs equals the number of charts it embeds and each SVG holds marks.

    python bench/screenshot_reports.py REPORT_DIR [--png-dir docs/img] [--pages leaderboard.html ...]
        [--window-size 1280,1400]

Prints one line per page (charts expected / drawn, marks, seconds) and exits 1 if any page failed.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def browser() -> str | None:
    return next((b for b in BROWSERS if shutil.which(b)), None)


def _offline_prefix() -> list[str]:
    try:
        if subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=10).returncode == 0:
            return ["unshare", "-n"]
    except (OSError, subprocess.SubprocessError):
        pass
    return []


def _command(page: Path, extra: list[str]) -> list[str]:
    exe = browser()
    if exe is None:
        raise RuntimeError("no Chromium found (apt-get install -y chromium)")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--disable-background-networking",
             "--proxy-server=http://127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND",
             "--virtual-time-budget=20000"]
    return _offline_prefix() + [exe, *flags, *extra, page.resolve().as_uri()]


@dataclass
class PageCheck:
    page: str
    charts: int  # vl-spec scripts in the file
    drawn: int  # Vega SVG roots in the DOM after scripts ran
    marks: list[int]  # drawn mark elements per SVG
    external: list[str]  # http(s) script/link sources in the file (must be empty)
    seconds: float

    @property
    def ok(self) -> bool:
        return not self.external and self.drawn == self.charts and all(m > 0 for m in self.marks)


def check_page(page: Path) -> PageCheck:
    """Render ``page`` offline and count the charts it drew."""
    started = time.perf_counter()
    raw = page.read_text(encoding="utf-8")
    charts = raw.count('class="vl-spec"')
    external = re.findall(r'<(?:script|link|img)[^>]+(?:src|href)="(https?:[^"]*)"', raw)
    dom = subprocess.run(_command(page, ["--dump-dom"]), capture_output=True, text=True, timeout=120).stdout
    svgs = re.split(r'<svg[^>]*class="marks"', dom)[1:]
    marks = [len(re.findall(r'<(?:path|line|rect|circle|text)\b', s.split("</svg>")[0])) for s in svgs]
    return PageCheck(page.name, charts, len(svgs), marks, external, time.perf_counter() - started)


def screenshot(page: Path, png: Path, size: str = "1280,1400") -> Path:
    png.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(_command(page, [f"--screenshot={png.resolve()}", f"--window-size={size}"]),
                   capture_output=True, timeout=120, check=True)
    return png


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("report_dir", type=Path)
    ap.add_argument("--png-dir", type=Path, default=None, help="save a screenshot of each page here")
    ap.add_argument("--pages", nargs="*", default=None)
    ap.add_argument("--window-size", default="1280,1400", help="screenshot size WIDTH,HEIGHT in pixels")
    args = ap.parse_args()
    pages = args.pages or ["index.html", "leaderboard.html", "roc.html", "steering.html", "geometry.html"]
    paths = [args.report_dir / p for p in pages]
    concept = sorted((args.report_dir / "concepts").rglob("*.html"))
    if args.pages is None and concept:
        paths.append(concept[0])
    failed = 0
    for path in paths:
        c = check_page(path)
        failed += not c.ok
        print(f"{'ok  ' if c.ok else 'FAIL'} {path.relative_to(args.report_dir)}: {c.drawn}/{c.charts} charts drawn, "
              f"marks per chart {c.marks}, external sources {len(c.external)}, {c.seconds:.1f}s")
        if args.png_dir:
            name = "report-" + str(path.relative_to(args.report_dir)).replace("/", "-").replace(".html", ".png")
            screenshot(path, args.png_dir / name, args.window_size)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""HTML building blocks for report pages: escaping, tables, chart embedding and the page shell.

Every string that comes from data goes through :func:`esc` (text and attributes). Chart specs are embedded as JSON
inside ``<script type="application/json">`` with ``<``, ``>`` and ``&`` written as JSON unicode escapes, so no data
value can close the script element; one small driver script hands them to ``vegaEmbed``. The Vega, Vega-Lite and
Vega-Embed JavaScript is inlined once per page (from ``vl-convert-python``'s bundle), so pages open offline.
"""

from __future__ import annotations

import functools
import html
import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d1d1f;background:#fff}
header{background:#23395d;color:#fff;padding:.6em 1.2em}header a{color:#cfe0ff;margin-right:1em}
main{padding:0 1.2em 2em;max-width:1200px}h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em}
table.data{border-collapse:collapse;font-size:.9em;margin:.5em 0}
table.data th,table.data td{border:1px solid #ddd;padding:.25em .6em;text-align:left}
table.data td.num{text-align:right;font-variant-numeric:tabular-nums}table.data th{background:#f3f5f8}
.note{color:#555;font-size:.9em}.chart{margin:.8em 0}.badge{display:inline-block;padding:0 .4em;border-radius:3px;
font-size:.8em;background:#eee;margin-right:.4em}.badge.positive{background:#d6f5d6}.badge.negative{background:#eee}
.badge.hard_negative{background:#ffe0cc}.example{border:1px solid #e4e4e4;border-radius:4px;padding:.4em .6em;
margin:.4em 0;line-height:1.7;white-space:pre-wrap;word-break:break-word;font-size:.92em}
.tok{border-radius:2px}.empty{padding:2em;border:2px dashed #ccc;color:#555;text-align:center}
"""

_DRIVER = """
document.querySelectorAll('script.vl-spec').forEach(function (el) {
  var target = document.getElementById(el.dataset.target);
  vegaEmbed(target, JSON.parse(el.textContent), {renderer: 'svg', mode: 'vega-lite',
    actions: {export: true, source: false, compiled: false, editor: false}})
    .catch(function (err) { target.textContent = 'chart error: ' + err; });
});
"""


def esc(value: Any) -> str:
    """HTML-escape any value for text or attribute context (quotes too)."""
    return html.escape("" if value is None else str(value), quote=True)


def json_for_script(obj: Any) -> str:
    """JSON that is safe inside a <script> element: '<', '>', '&' and line separators become unicode escapes."""
    text = json.dumps(obj, separators=(",", ":"), default=str, allow_nan=False)
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "axwarehouse"


@functools.lru_cache(maxsize=1)
def vega_bundle() -> str:
    """Vega + Vega-Lite + Vega-Embed as one script, assigning ``vegaEmbed`` on window (no network).

    Building the bundle takes vl-convert seconds — most of a report's cold start (bench/report.py in
    BENCHMARKS.md) — so it is cached on disk per vl-convert version (a local file produced offline; delete it any
    time).
    """
    import vl_convert as vlc

    path = _cache_dir() / f"vega-bundle-{vlc.__version__}.js"
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        pass
    # a literal "</script" inside the bundle would end the element early; escaping the slash is a no-op in JS strings
    bundle = vlc.javascript_bundle().replace("</script", "<\\/script")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(bundle, encoding="utf-8")
        os.replace(tmp, path)
    except OSError:  # a read-only home only costs the next run the rebuild
        pass
    return bundle


def fmt_num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], digits: int = 3, css: str = "data") -> str:
    """An HTML table; numbers right-aligned and rounded, everything escaped."""
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = []
    for row in rows:
        cells = []
        for v in row:
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                cells.append(f'<td class="num">{esc(fmt_num(v, digits))}</td>')
            else:
                cells.append(f"<td>{esc(v)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


class Page:
    """A report page: title, navigation, HTML sections and charts (Altair charts or Vega-Lite dicts)."""

    def __init__(self, title: str, nav: Sequence[tuple[str, str]] = (), root: str = ""):
        self.title = title
        self.nav = list(nav)
        self.root = root  # relative path from this page to the report root ("" or "../")
        self.parts: list[str] = []
        self.specs: list[dict] = []

    def add(self, fragment: str) -> None:
        """Append trusted HTML (built with esc/table)."""
        self.parts.append(fragment)

    def heading(self, text: str, level: int = 2) -> None:
        self.parts.append(f"<h{level}>{esc(text)}</h{level}>")

    def para(self, text: str, css: str = "note") -> None:
        self.parts.append(f'<p class="{css}">{esc(text)}</p>')

    def chart(self, chart: Any, name: str) -> dict:
        """Embed a chart; returns its Vega-Lite spec (also what the PNG/SVG export renders)."""
        spec = chart if isinstance(chart, dict) else chart.to_dict()
        idx = len(self.specs)
        self.specs.append(spec)
        self.parts.append(f'<div class="chart" id="chart-{idx}" data-name="{esc(name)}"></div>'
                          f'<script type="application/json" class="vl-spec" data-target="chart-{idx}" '
                          f'data-name="{esc(name)}">{json_for_script(spec)}</script>')
        return spec

    def render(self) -> str:
        nav = "".join(f'<a href="{esc(self.root + href)}">{esc(label)}</a>' for label, href in self.nav)
        scripts = ""
        if self.specs:
            scripts = f"<script>{vega_bundle()}</script><script>{_DRIVER}</script>"
        return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
                f"<title>{esc(self.title)}</title><style>{CSS}</style></head><body>"
                f"<header>{nav}</header><main><h1>{esc(self.title)}</h1>{''.join(self.parts)}</main>"
                f"{scripts}</body></html>\n")

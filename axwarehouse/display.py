"""Render a DuckDB relation as an aligned text table, CSV or JSON (for `axw sql`, leaderboards, status)."""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Any


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else f"{value:.4f}"
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def rows_of(rel) -> tuple[list[str], list[tuple]]:
    return list(rel.columns), rel.fetchall()


def render(rel, fmt: str = "table") -> str:
    """``fmt`` is table | csv | json. JSON is a list of objects, one per row."""
    columns, rows = rows_of(rel)
    if fmt == "json":
        return json.dumps([dict(zip(columns, r)) for r in rows], default=str, indent=1)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)
        return buf.getvalue().rstrip("\n")
    cells = [[_cell(v) for v in r] for r in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(v.rjust(w) if _numeric(v) else v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out)


def _numeric(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False

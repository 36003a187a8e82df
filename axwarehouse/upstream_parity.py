"""Upstream AxBench's own per-concept latent AUROC on the shipped Concept10 data, and ours beside it.

The figures (``data/axbench-concept10/upstream_layer18.json``) were produced by AxBench's own scripts on the same
release, model and layer; how is recorded in the file. The test suite compares the first concepts of the demo
(tests/test_upstream_parity.py), ``bench/parity.py`` all ten.

Tolerance: upstream ran bfloat16; we run bfloat16 where the CPU or GPU computes it natively (``--dtype auto``)
and float32 elsewhere. The per-concept gap measured between a float32 and a bfloat16 run of ours was below 0.005
(DiffMean) and 0.003 (Probe), so a concept may differ by at most 0.01 and the DiffMean mean over the ten concepts
by at most 0.003.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

UPSTREAM_FILE = Path(__file__).resolve().parent / "data" / "axbench-concept10" / "upstream_layer18.json"


@cache
def upstream() -> dict:
    """The upstream figures: ``auroc[method][concept_id]``, ``diffmean_mean``, ``tolerance``, model, layer."""
    raw = json.loads(UPSTREAM_FILE.read_text())
    raw["auroc"] = {m: {int(c): a for c, a in per.items()} for m, per in raw["auroc"].items()}
    return raw


def ours(cat) -> dict[str, dict[int, float]]:
    """Our per-concept AUROC from the ``latent_auroc`` view, at upstream's concept set, model and layer."""
    ref = upstream()
    rows = cat.sql("SELECT method, concept_id, auroc FROM latent_auroc WHERE concept_set = ? AND model = ? "
                   "AND layer = ?", [ref["concept_set"], ref["model"], ref["layer"]]).fetchall()
    out: dict[str, dict[int, float]] = {}
    for method, cid, auroc in rows:
        out.setdefault(method, {})[int(cid)] = auroc
    return out


def gaps(mine: dict[int, float], theirs: dict[int, float]) -> dict[int, float]:
    """|ours − upstream's| per upstream concept (NaN where we have no figure, so it never passes a tolerance)."""
    return {c: abs(mine.get(c, float("nan")) - u) for c, u in theirs.items()}


def side_by_side(method: str, mine: dict[int, float], theirs: dict[int, float]) -> str:
    """One line per upstream concept: ours, upstream's, the gap."""
    gap = gaps(mine, theirs)
    return "\n".join(f"{method} concept {c}: ours {mine.get(c, float('nan')):.6f} upstream {u:.6f} gap {gap[c]:.4f}"
                     for c, u in sorted(theirs.items()))

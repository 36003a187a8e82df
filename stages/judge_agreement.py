"""`axw judge compare A B`: how closely two judges agree on the outputs both rated (view `judge_agreement`).

A side is a judge as stored in ``judge_scores.judge`` (``BACKEND:MODEL``, e.g. ``openai:gpt-4o-mini``,
``embedded:smollm2``, ``proxy:embedded:smollm2``), optionally pinned to one config as ``JUDGE@HASHPREFIX`` when that
judge rated with several settings or rubrics. The numbers come from the view; this module only resolves the two
sides and orients the view's (unordered) pair as A, B.
"""

from __future__ import annotations

import duckdb

from axwarehouse.catalog import Catalog
from axwarehouse.errors import AxwError

_FAILURES = {"zero": "failed ratings count as 0 (AxBench's rule)", "drop": "failed ratings left out (drop)"}


def resolve_judge(cat: Catalog, spec: str) -> tuple[str, str]:
    """(judge, judge_config_hash) named by ``JUDGE`` or ``JUDGE@HASHPREFIX``; one-line errors when none or several."""
    judge, _, prefix = spec.rpartition("@") if "@" in spec else (spec, "", "")
    rows = cat.sql("""SELECT judge, judge_config_hash, rubric, judge_temperature, judge_max_tokens, judge_seed
                      FROM judge_settings WHERE judge = ? AND starts_with(judge_config_hash, ?)
                      ORDER BY judge_config_hash""", [judge, prefix]).fetchall()
    if not rows:
        known = [r[0] for r in cat.sql("SELECT DISTINCT judge FROM judge_scores ORDER BY 1").fetchall()]
        raise AxwError(f"no ratings by judge {spec!r} (judges with ratings: {', '.join(known) or 'none'})")
    if len(rows) > 1:
        choices = "; ".join(f"{j}@{h[:8]} (rubric {r}, temperature {t}, max tokens {m}, seed {s})"
                            for j, h, r, t, m, s in rows)
        raise AxwError(f"judge {spec!r} rated with {len(rows)} configs: {choices}. Pin one with JUDGE@HASH")
    return rows[0][0], rows[0][1]


def compare_judges(cat: Catalog, a: str, b: str, judge_failures: str = "zero"
                   ) -> tuple[duckdb.DuckDBPyRelation, str]:
    """Per criterion: n, Spearman, Cohen's kappa, exact agreement and each side's mean rating, oriented A then B;
    and a header line naming both sides and the failure rule."""
    ja, ha = resolve_judge(cat, a)
    jb, hb = resolve_judge(cat, b)
    if (ja, ha) == (jb, hb):
        raise AxwError(f"{a!r} and {b!r} are the same judge config; compare two different judges or configs")
    flipped = (ja, ha) > (jb, hb)  # the view lists each pair once, the side that sorts first as a
    first, second = ("b", "a") if flipped else ("a", "b")
    (fa, fha), (fb, fhb) = ((jb, hb), (ja, ha)) if flipped else ((ja, ha), (jb, hb))
    rel = cat.sql(f"""SELECT criterion, n, spearman, kappa, exact_agreement, mean_{first} AS mean_a,
                             mean_{second} AS mean_b
                      FROM judge_agreement
                      WHERE judge_a = ? AND judge_config_hash_a = ? AND judge_b = ? AND judge_config_hash_b = ?
                        AND judge_failures = ?
                      ORDER BY CASE criterion WHEN 'concept' THEN 0 WHEN 'instruction' THEN 1
                                              WHEN 'fluency' THEN 2 ELSE 3 END, criterion""",
                  [fa, fha, fb, fhb, judge_failures])
    if not rel.fetchall():
        raise AxwError(f"{a} and {b} rated no outputs in common (judge the same outputs with both first)")
    header = (f"A = {ja}@{ha[:8]}  vs  B = {jb}@{hb[:8]}; {_FAILURES[judge_failures]}; "
              "spearman and kappa over the outputs both rated")
    return rel, header

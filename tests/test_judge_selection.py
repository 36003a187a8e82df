"""Which steered outputs a judge run covers: the concept set, concept and method lists select exactly their
outputs, bound as parameters (a method name with a quote is a value, not SQL)."""

from __future__ import annotations

import duckdb

from axwarehouse.judging.config import JudgeConfig
from axwarehouse.judging.selection import output_filter

ROWS = [("a", "s1", 1, "diffmean"), ("b", "s1", 2, "diffmean"), ("c", "s1", 2, "prompt"), ("d", "s2", 2, "prompt"),
        ("e", "s1", 3, "it's")]


def _selected(cfg: JudgeConfig) -> list[str]:
    con = duckdb.connect()
    con.execute("CREATE TABLE steering_outputs (output_id VARCHAR, concept_set VARCHAR, concept_id BIGINT, "
                "method VARCHAR)")
    con.executemany("INSERT INTO steering_outputs VALUES (?, ?, ?, ?)", ROWS)
    where, params = output_filter(cfg)
    return [r[0] for r in con.execute(f"SELECT o.output_id FROM steering_outputs o WHERE {where} "
                                      "ORDER BY o.output_id", params).fetchall()]


def test_no_filter_selects_every_output():
    assert _selected(JudgeConfig()) == ["a", "b", "c", "d", "e"]


def test_concepts_and_methods_select_their_outputs():
    assert _selected(JudgeConfig(concept_set="s1", concepts=(2, 3))) == ["b", "c", "e"]
    assert _selected(JudgeConfig(concept_set="s1", concepts=(2,), methods=("prompt",))) == ["c"]
    assert _selected(JudgeConfig(methods=("diffmean", "it's"))) == ["a", "b", "e"]


def test_lists_are_bound_not_pasted():
    where, params = output_filter(JudgeConfig(concept_set="s1", concepts=(2, 3), methods=("it's",)))
    assert "2" not in where and "it's" not in where
    assert params == ["s1", [2, 3], ["it's"]]

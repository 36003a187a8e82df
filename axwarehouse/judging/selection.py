"""Which steered outputs a judge run covers (concept set, concepts, methods; every value a bound parameter) and
which of their ratings are still missing."""

from __future__ import annotations

from axwarehouse.catalog import Catalog
from axwarehouse.judging.config import JudgeConfig
from axwarehouse.stage_runner import in_list


def output_filter(cfg: JudgeConfig) -> tuple[str, list]:
    """(WHERE condition on ``steering_outputs o``, its parameters) selecting the outputs ``cfg`` covers."""
    where, params = "true", []
    if cfg.concept_set:
        where += " AND o.concept_set = ?"
        params.append(cfg.concept_set)
    for column, values, sql_type in (("o.concept_id", cfg.concepts, "BIGINT"), ("o.method", cfg.methods, "VARCHAR")):
        cond, more = in_list(column, [int(v) for v in values] if sql_type == "BIGINT" else list(values), sql_type)
        where += cond
        params += more
    return where, params


def pending_ratings(cat: Catalog, cfg: JudgeConfig, judge: str, jhash: str) -> tuple[list[tuple], int]:
    """(output_id, criterion, concept, instruction, generation) still to rate, and how many are already rated."""
    where, params = output_filter(cfg)
    rows = cat.sql(f"""
        WITH crit AS (SELECT unnest(?::VARCHAR[]) AS criterion),
             o AS (SELECT o.output_id, o.concept_set, o.concept_id, o.instruction, o.generation
                   FROM steering_outputs o WHERE {where}),
             todo AS (SELECT o.*, crit.criterion FROM o CROSS JOIN crit)
        SELECT t.output_id, t.criterion, c.concept, t.instruction, t.generation,
               EXISTS (SELECT 1 FROM judge_scores j WHERE j.output_id = t.output_id AND j.judge = ?
                         AND j.criterion = t.criterion AND j.config_hash = ?) AS done
        FROM todo t LEFT JOIN concepts c ON c.concept_set = t.concept_set AND c.concept_id = t.concept_id
        ORDER BY t.output_id, t.criterion""", [list(cfg.criteria), *params, judge, jhash]).fetchall()
    return [r[:5] for r in rows if not r[5]], sum(1 for r in rows if r[5])

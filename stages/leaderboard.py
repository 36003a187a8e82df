"""`axw leaderboard …`: read the leaderboard views (no computation happens here)."""

from __future__ import annotations

import duckdb

from axwarehouse.catalog import Catalog
from axwarehouse.judging.validity import validity_line


def latent_leaderboard(cat: Catalog, concept_set: str | None = None) -> duckdb.DuckDBPyRelation:
    """Rows of the `latent_leaderboard` view, best mean AUROC first, optionally for one concept set."""
    where = "WHERE concept_set = ?" if concept_set else ""
    return cat.sql(f"SELECT * FROM latent_leaderboard {where} ORDER BY concept_set, model, layer, mean_auroc DESC",
                   [concept_set] if concept_set else None)


def _steering_filters(concept_set: str | None, judge: str | None, judge_failures: str) -> tuple[str, list]:
    where, params = ["judge_failures = ?"], [judge_failures]
    if concept_set:
        where.append("concept_set = ?")
        params.append(concept_set)
    if judge:
        where.append("judge = ?")
        params.append(judge)
    return " AND ".join(where), params


def steering_leaderboard(cat: Catalog, concept_set: str | None = None, judge: str | None = None,
                         judge_failures: str = "zero") -> duckdb.DuckDBPyRelation:
    """Rows of the `steering_leaderboard` view (test split at the selection-chosen factor), best first, under one
    judge-failure rule ('zero': failed ratings score 0 as in AxBench; 'drop': left out), with the judge settings
    that tell judge configs apart."""
    where, params = _steering_filters(concept_set, judge, judge_failures)
    return cat.sql(f"""SELECT method, model, layer, concept_set, judge, judge_note, judge_failures, rubric,
                              judge_temperature, judge_max_tokens, judge_seed, mean_score, mean_concept,
                              mean_instruction, mean_fluency, mean_perplexity, mean_best_factor, n_concepts,
                              n_parse_failures, n_failed_ratings, n_constrained_ratings, judge_config_hash
                       FROM steering_leaderboard WHERE {where}
                       ORDER BY concept_set, model, layer, judge, judge_config_hash, mean_score DESC NULLS LAST""",
                   params)


def failures_note(cat: Catalog, concept_set: str | None = None, judge: str | None = None,
                  judge_failures: str = "zero") -> str:
    """One line: how many test ratings at the chosen factors had no valid rating, and what the rule did."""
    where, params = _steering_filters(concept_set, judge, judge_failures)
    n = cat.sql(f"SELECT coalesce(sum(n_failed_ratings), 0) FROM steering_leaderboard WHERE {where}",
                params).fetchall()[0][0]
    what = ("scored 0 (AxBench's rule; --judge-failures drop leaves them out)" if judge_failures == "zero"
            else "left out of the means (--judge-failures drop; AxBench scores them 0)")
    return f"judge failures: {int(n)} ratings without a valid rating at the chosen factors, {what}"


def winrate_table(cat: Catalog, baseline: str = "prompt", concept_set: str | None = None,
                  judge_failures: str = "zero") -> duckdb.DuckDBPyRelation:
    """Rows of the `winrate` view against ``baseline`` under one judge-failure rule."""
    where, params = ["baseline = ?", "judge_failures = ?"], [baseline, judge_failures]
    if concept_set:
        where.append("concept_set = ?")
        params.append(concept_set)
    return cat.sql(f"""SELECT method, baseline, model, layer, concept_set, judge, judge_failures, rubric,
                              judge_temperature, judge_max_tokens, judge_seed, n_pairs, win_rate, loss_rate,
                              tie_rate, n_unscored, judge_config_hash
                       FROM winrate WHERE {' AND '.join(where)}
                       ORDER BY concept_set, model, layer, judge, judge_config_hash, win_rate DESC""", params)


def judges_table(cat: Catalog, concept_set: str | None = None) -> duckdb.DuckDBPyRelation:
    """The `judge_validity_macro` view: per judge config × concept set × criterion, the macro figures."""
    where, params = ("concept_set = ?", [concept_set]) if concept_set else ("true", [])
    return cat.sql(f"""SELECT judge, concept_set, criterion, n_concepts, n, false_positive_rate,
                              max_false_positive_rate, true_positive_rate, accuracy, kappa, auroc,
                              n_hard_negative, hard_negative_fpr, n_failed, judge_config_hash
                       FROM judge_validity_macro WHERE {where}
                       ORDER BY concept_set, judge, judge_config_hash, criterion""", params)


def validity_notes(cat: Catalog, concept_set: str | None = None, judge: str | None = None) -> list[str]:
    """:func:`validity_line` of every judge config × concept set on the steering leaderboard."""
    where, params = _steering_filters(concept_set, judge, "zero")
    shown = cat.sql(f"""SELECT DISTINCT judge, judge_config_hash, concept_set FROM steering_leaderboard
                        WHERE {where} ORDER BY ALL""", params).fetchall()
    return [validity_line(cat, j, h, cs) for j, h, cs in shown]

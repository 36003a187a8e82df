"""`axw leaderboard …`: read the leaderboard views (no computation happens here)."""

from __future__ import annotations

import duckdb

from axwarehouse.catalog import Catalog


def latent_leaderboard(cat: Catalog, concept_set: str | None = None) -> duckdb.DuckDBPyRelation:
    """Rows of the `latent_leaderboard` view, best mean AUROC first, optionally for one concept set."""
    where = "WHERE concept_set = ?" if concept_set else ""
    return cat.sql(f"SELECT * FROM latent_leaderboard {where} ORDER BY concept_set, model, layer, mean_auroc DESC",
                   [concept_set] if concept_set else None)


def steering_leaderboard(cat: Catalog, concept_set: str | None = None, judge: str | None = None
                         ) -> duckdb.DuckDBPyRelation:
    """Rows of the `steering_leaderboard` view (test split at the selection-chosen factor), best first."""
    where, params = [], []
    if concept_set:
        where.append("concept_set = ?")
        params.append(concept_set)
    if judge:
        where.append("judge = ?")
        params.append(judge)
    clause = ("WHERE " + " AND ".join(where)) if where else ""
    return cat.sql(f"""SELECT method, model, layer, concept_set, judge, judge_note, mean_score, mean_concept,
                              mean_instruction, mean_fluency, mean_perplexity, mean_best_factor, n_concepts,
                              n_parse_failures, n_constrained_ratings
                       FROM steering_leaderboard {clause}
                       ORDER BY concept_set, model, layer, judge, mean_score DESC NULLS LAST""", params or None)


def winrate_table(cat: Catalog, baseline: str = "prompt", concept_set: str | None = None) -> duckdb.DuckDBPyRelation:
    """Rows of the `winrate` view against ``baseline``."""
    where, params = ["baseline = ?"], [baseline]
    if concept_set:
        where.append("concept_set = ?")
        params.append(concept_set)
    return cat.sql(f"""SELECT method, baseline, model, layer, concept_set, judge, n_pairs, win_rate, loss_rate,
                              tie_rate, n_unscored
                       FROM winrate WHERE {' AND '.join(where)}
                       ORDER BY concept_set, model, layer, judge, win_rate DESC""", params)

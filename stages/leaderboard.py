"""`axw leaderboard …`: read the leaderboard views (no computation happens here)."""

from __future__ import annotations

import duckdb

from axwarehouse.catalog import Catalog


def latent_leaderboard(cat: Catalog, concept_set: str | None = None) -> duckdb.DuckDBPyRelation:
    """Rows of the `latent_leaderboard` view, best mean AUROC first, optionally for one concept set."""
    where = "WHERE concept_set = ?" if concept_set else ""
    return cat.sql(f"SELECT * FROM latent_leaderboard {where} ORDER BY concept_set, model, layer, mean_auroc DESC",
                   [concept_set] if concept_set else None)

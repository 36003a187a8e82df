"""`axw status`: row counts per table, then per concept set / model / layer / method what is done, missing or stale.

* missing: generations without activations; concepts without artifacts; artifacts without latent scores.
* stale: artifacts trained by an older version of their method's file (source hash differs), and latent scores
  whose artifact (same config_hash) is gone.
"""

from __future__ import annotations

from axwarehouse import schemas
from axwarehouse.catalog import Catalog
from axwarehouse.lineage import code_version


def _source_hash(method: str) -> str | None:
    from axwarehouse.methods import REGISTRY, discover

    discover()
    return REGISTRY[method].source_hash() if method in REGISTRY else None


def _lines(cat: Catalog, query: str, params: list | None = None) -> list[tuple]:
    return cat.sql(query, params).fetchall() if params else cat.sql(query).fetchall()


def status_report(cat: Catalog) -> str:
    """Human-readable status of the warehouse."""
    out = [f"catalog {cat.path}", f"code version {code_version()}", "", "tables:"]
    for table in schemas.TABLES:
        try:
            n = cat.count(table)
        except Exception:  # a table registered by a newer stage than this catalog knows
            n = 0
        out.append(f"  {table:<18} {n:>10,} rows")
    sets = _lines(cat, "SELECT concept_set, count(*) FROM concepts GROUP BY 1 ORDER BY 1")
    if not sets:
        out.append("\nno concept sets yet: run `axw import-axbench DIR` or `axw demo`")
        return "\n".join(out)
    for concept_set, n_concepts in sets:
        n_gen = cat.count("generations", "concept_set = ?", [concept_set])
        out.append(f"\nconcept set {concept_set}: {n_concepts} concepts, {n_gen} generations")
        for model, layer, n_ex in _lines(cat, """
                SELECT model, layer, count(DISTINCT (split, example_id)) FROM activations
                WHERE concept_set = ? GROUP BY 1, 2 ORDER BY 1, 2""", [concept_set]):
            missing = n_gen - n_ex
            state = "complete" if missing == 0 else f"MISSING {missing} examples (run `axw activations`)"
            out.append(f"  activations {model} L{layer}: {n_ex} examples, {state}")
        for method, model, layer, chash, n_art, n_scored, hashes in _lines(cat, """
                WITH a AS (SELECT method, model, layer, config_hash, count(DISTINCT concept_id) AS n_art,
                                  list(DISTINCT json_extract_string(extra, '$.source_hash')) AS hashes
                           FROM method_artifacts WHERE concept_set = ? GROUP BY ALL),
                     s AS (SELECT method, model, layer, config_hash, count(DISTINCT concept_id) AS n_scored
                           FROM latent_scores WHERE concept_set = ? GROUP BY ALL)
                SELECT a.method, a.model, a.layer, a.config_hash, a.n_art, coalesce(s.n_scored, 0), a.hashes
                FROM a LEFT JOIN s USING (method, model, layer, config_hash) ORDER BY 1, 2, 3""",
                [concept_set, concept_set]):
            notes = []
            if n_art < n_concepts:
                notes.append(f"MISSING artifacts for {n_concepts - n_art} concepts (run `axw train`)")
            if n_scored < n_art:
                notes.append(f"MISSING latent scores for {n_art - n_scored} concepts (run `axw latent`)")
            current = _source_hash(method)
            if current and any(h != current for h in hashes):
                notes.append(f"STALE: trained by an older version of methods/{method}.py (axw train --replace)")
            out.append(f"  {method:<10} {model} L{layer} [{chash}]: {n_art} trained, {n_scored} scored"
                       + ("; " + "; ".join(notes) if notes else ", up to date"))
        orphans = _lines(cat, """
            SELECT s.method, count(DISTINCT s.concept_id) FROM latent_scores s
            WHERE s.concept_set = ? AND NOT EXISTS (
                SELECT 1 FROM method_artifacts a WHERE a.method = s.method AND a.model = s.model
                  AND a.layer = s.layer AND a.concept_set = s.concept_set AND a.concept_id = s.concept_id
                  AND a.config_hash = s.config_hash)
            GROUP BY 1""", [concept_set])
        for method, n in orphans:
            out.append(f"  STALE: {n} concepts of {method} have latent scores but no matching artifact")
    return "\n".join(out)

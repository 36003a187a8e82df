"""Catalog look-ups several stages share: a concept set's concepts and the config_hash of a method's artifacts.

They live in the library, not in a stage module, so stages depend on each other only through catalog tables.
"""

from __future__ import annotations

from axwarehouse.catalog import Catalog
from axwarehouse.errors import AxwError
from axwarehouse.lineage import config_hash
from axwarehouse.methods.base import Method


def method_hash(method: Method) -> str:
    """config_hash of a method's artifacts: hyperparameters + seed (model/layer/concept set are key columns)."""
    return config_hash(method.params())


def concept_table(cat: Catalog, concept_set: str, concepts: tuple[int, ...] = ()) -> list[tuple[int, str, str]]:
    """(concept_id, concept, genre) of a concept set; AxwError when empty or when asked-for ids are absent."""
    rows = cat.sql("SELECT concept_id, concept, coalesce(genre, 'text') FROM concepts WHERE concept_set = ? "
                   "ORDER BY concept_id", [concept_set]).fetchall()
    if not rows:
        raise AxwError(f"concept set {concept_set!r} has no concepts (import or generate it first)")
    if concepts:
        missing = sorted(set(concepts) - {r[0] for r in rows})
        if missing:
            raise AxwError(f"concept id(s) {missing} not in concept set {concept_set!r}")
        rows = [r for r in rows if r[0] in set(concepts)]
    return rows

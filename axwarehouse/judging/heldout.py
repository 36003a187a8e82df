"""Which texts of a concept set no judge trains or calibrates on: the labelled data `axw judge validate` rates.

A set with a ``latent_eval`` split (AxBench's release has one) is validated on it. A set with only a train split
gives up a fixed slice of it instead — every train example whose hashed id falls in :data:`TRAIN_HOLDOUT_SHARE` —
and the proxy judge's concept classifiers then train without that slice (``concept_training_texts``), so a
validation never rates a text its judge was fitted on. The slice depends on the example's id only, never on what
else is in the set.
"""

from __future__ import annotations

import hashlib

from axwarehouse.catalog import Catalog
from axwarehouse.errors import AxwError

TRAIN_HOLDOUT_SHARE = 5  # one train example in 5 is held out when a set has no latent_eval split


def in_train_holdout(concept_set: str, example_id: int) -> bool:
    """Whether a train example belongs to the held-out slice (used only for sets without a latent_eval split)."""
    digest = hashlib.sha256(f"{concept_set}|{int(example_id)}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % TRAIN_HOLDOUT_SHARE == 0


def has_latent_eval(cat: Catalog, concept_set: str) -> bool:
    return cat.count("generations", "concept_set = ? AND split = 'latent_eval'", [concept_set]) > 0


def heldout_rows(cat: Catalog, concept_set: str) -> list[tuple]:
    """(split, example_id, concept_id, category, input, output) of the set's held-out texts (owner concept -1 =
    a shared negative); AxwError when the set has none."""
    if not cat.count("concepts", "concept_set = ?", [concept_set]):
        raise AxwError(f"unknown concept set {concept_set!r} (see `axw status`)")
    split = "latent_eval" if has_latent_eval(cat, concept_set) else "train"
    rows = cat.sql("""SELECT split, example_id, concept_id, category, input, output FROM generations
                      WHERE concept_set = ? AND split = ? AND output IS NOT NULL
                      ORDER BY concept_id, category, example_id""", [concept_set, split]).fetchall()
    if split == "train":
        rows = [r for r in rows if in_train_holdout(concept_set, r[1])]
    if not any(r[3] == "positive" and r[2] >= 0 for r in rows):
        raise AxwError(f"concept set {concept_set!r} has no held-out data to validate a judge on (no latent_eval "
                       "split and no held-out train positives): import or generate its texts first")
    return rows

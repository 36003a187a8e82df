"""Arrow schemas of every warehouse table: the single source of truth for column names and types.

Every data row carries lineage (``run_id``, ``config_hash``, ``code_version``); the catalog stamps those columns
on write, so the schemas below list them once via :data:`LINEAGE`.

``PARTITIONS`` names the columns whose values become hive-style folders (``model=…/layer=…/``). The folders only
organise files: the values also live inside the files, and views read the in-file columns.
"""

from __future__ import annotations

import pyarrow as pa

LINEAGE = [
    pa.field("run_id", pa.string()),
    pa.field("config_hash", pa.string()),
    pa.field("code_version", pa.string()),
]
LINEAGE_NAMES = [f.name for f in LINEAGE]


def _schema(*fields: pa.Field) -> pa.Schema:
    return pa.schema(list(fields) + LINEAGE)


CONCEPTS = _schema(
    pa.field("concept_set", pa.string(), nullable=False),
    pa.field("concept_id", pa.int64(), nullable=False),
    pa.field("concept", pa.string(), nullable=False),
    pa.field("genre", pa.string()),  # the first genre: the only one AxBench uses
    pa.field("genres", pa.list_(pa.string())),
    pa.field("ref", pa.string()),  # e.g. a Neuronpedia feature URL
    pa.field("sae_id", pa.int64()),
    pa.field("source", pa.string()),
    pa.field("source_hash", pa.string()),  # hash of the imported input, to detect re-imports
)

GENERATIONS = _schema(
    pa.field("concept_set", pa.string(), nullable=False),
    pa.field("split", pa.string(), nullable=False),  # train | latent_eval
    pa.field("example_id", pa.int64(), nullable=False),
    pa.field("concept_id", pa.int64(), nullable=False),  # -1 = shared negative
    pa.field("category", pa.string(), nullable=False),  # positive | negative | hard_negative
    pa.field("genre", pa.string()),
    pa.field("input", pa.string()),
    pa.field("output", pa.string()),
    pa.field("output_concept", pa.string()),
    pa.field("dataset_category", pa.string()),
    pa.field("source", pa.string()),
    pa.field("generator_model", pa.string()),
    pa.field("sae_link", pa.string()),
    pa.field("sae_id", pa.int64()),
)

ACTIVATIONS = _schema(
    pa.field("model", pa.string(), nullable=False),
    pa.field("layer", pa.int32(), nullable=False),
    pa.field("concept_set", pa.string(), nullable=False),
    pa.field("split", pa.string(), nullable=False),
    pa.field("example_id", pa.int64(), nullable=False),
    pa.field("position", pa.int32(), nullable=False),
    pa.field("token_id", pa.int32()),
    pa.field("token", pa.string()),
    pa.field("is_prefix", pa.bool_()),  # chat-template prefix: excluded from scoring
    pa.field("act", pa.list_(pa.float16())),  # residual stream at the output of decoder layer `layer`
)

METHOD_ARTIFACTS = _schema(
    pa.field("method", pa.string(), nullable=False),
    pa.field("model", pa.string(), nullable=False),
    pa.field("layer", pa.int32(), nullable=False),
    pa.field("concept_set", pa.string(), nullable=False),
    pa.field("concept_id", pa.int64(), nullable=False),
    pa.field("direction", pa.list_(pa.float32())),  # detection/steering direction (unit norm for most methods)
    pa.field("bias", pa.float64()),
    pa.field("max_train_activation", pa.float64()),
    pa.field("weights_path", pa.string()),  # safetensors file for methods with larger weights
    pa.field("extra", pa.string()),  # JSON: method-specific facts (training loss, chosen feature, ...)
)

LATENT_SCORES = _schema(
    pa.field("method", pa.string(), nullable=False),
    pa.field("model", pa.string(), nullable=False),
    pa.field("layer", pa.int32(), nullable=False),
    pa.field("concept_set", pa.string(), nullable=False),
    pa.field("concept_id", pa.int64(), nullable=False),
    pa.field("split", pa.string(), nullable=False),
    pa.field("example_id", pa.int64(), nullable=False),
    pa.field("score", pa.float64()),  # max over scored (non-prefix) tokens
    pa.field("max_position", pa.int32()),  # position of the first argmax token
    pa.field("max_token", pa.string()),
    pa.field("token_scores", pa.list_(pa.float32())),  # per-token scores, positions >= prefix, for the highlighter
)

TABLES: dict[str, pa.Schema] = {
    "concepts": CONCEPTS,
    "generations": GENERATIONS,
    "activations": ACTIVATIONS,
    "method_artifacts": METHOD_ARTIFACTS,
    "latent_scores": LATENT_SCORES,
}

PARTITIONS: dict[str, list[str]] = {
    "concepts": ["concept_set"],
    "generations": ["concept_set"],
    "activations": ["model", "layer"],
    "method_artifacts": ["method"],
    "latent_scores": ["method"],
}


def register_table(name: str, schema: pa.Schema, partition_by: list[str] | None = None) -> None:
    """Add a table to the warehouse (used by stages that own extra tables). Idempotent for equal schemas."""
    if name in TABLES and not TABLES[name].equals(schema):
        raise ValueError(f"table {name} already registered with a different schema")
    TABLES[name] = schema
    PARTITIONS[name] = list(partition_by or [])


def data_columns(table: str) -> list[str]:
    """Columns a stage must supply (everything except lineage, which the catalog stamps)."""
    return [f.name for f in TABLES[table] if f.name not in LINEAGE_NAMES]

# --- issue 6: SAEs trained by `axw sae train` (files in the SAELens layout under warehouse/saes/) ---
TABLES["saes"] = _schema(
    pa.field("model", pa.string(), nullable=False),
    pa.field("layer", pa.int32(), nullable=False),
    pa.field("name", pa.string(), nullable=False),
    pa.field("concept_set", pa.string()),  # whose train-split activations it was fitted on
    pa.field("path", pa.string()),  # relative to the warehouse folder
    pa.field("architecture", pa.string()),
    pa.field("d_in", pa.int32()),
    pa.field("d_sae", pa.int32()),
    pa.field("k", pa.int32()),
    pa.field("n_tokens", pa.int64()),
    pa.field("fvu", pa.float64()),  # fraction of variance unexplained on the training tokens
    pa.field("alive_features", pa.int32()),
)
PARTITIONS["saes"] = []

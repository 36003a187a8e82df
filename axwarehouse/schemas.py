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


def table_schema(*fields: pa.Field) -> pa.Schema:
    """A table's schema: its own ``fields`` followed by the lineage columns the catalog stamps."""
    return pa.schema(list(fields) + LINEAGE)


_schema = table_schema


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
    # the concept that owns the example (-1 = a shared negative): the partition a per-concept reader opens; NULL in
    # files written before the column existed (read by scanning, see axwarehouse/activation_store.py)
    pa.field("concept_id", pa.int64()),
    # residual stream at the output of decoder layer `layer`, in one of two columns (the other is NULL):
    # - act_bf16 (default, `--store-dtype bfloat16`): the bfloat16 bit patterns as uint16, written as a
    #   fixed_size_list<uint16, d> (2 bytes per value; bfloat16 keeps float32's exponent range, which Gemma-family
    #   activations need: |h| > 65504 overflows float16);
    # - act (`--store-dtype float32`, and every file written before act_bf16 existed): float32, exact.
    pa.field("act", pa.list_(pa.float32())),
    pa.field("act_bf16", pa.list_(pa.uint16())),
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

LLM_CALLS = _schema(  # the LLM response cache and cost ledger: one row per call actually made
    pa.field("request_hash", pa.string(), nullable=False),  # sha256 of backend, model, messages, params, seed, attempt
    pa.field("backend", pa.string(), nullable=False),  # openai | openai-compatible | embedded
    pa.field("model", pa.string(), nullable=False),
    pa.field("endpoint", pa.string()),  # scheme://host[:port]/path of the server, credentials stripped
    pa.field("stage", pa.string()),  # the stage that made the call (generate, judge, ...)
    pa.field("purpose", pa.string()),  # genre | positive | shared_negative | contrast_words | ...
    pa.field("request", pa.string()),  # JSON {messages, params, seed, attempt}: no headers, never a key
    pa.field("response", pa.string()),
    pa.field("finish_reason", pa.string()),
    pa.field("ok", pa.bool_()),  # the answer passed the caller's validation
    pa.field("error", pa.string()),  # empty | refused | truncated | malformed | <validator message>
    pa.field("prompt_tokens", pa.int64()),
    pa.field("completion_tokens", pa.int64()),
    pa.field("tokens_estimated", pa.bool_()),  # server sent no usage block
    pa.field("cost_usd", pa.float64()),  # NULL when the model's price is unknown
    pa.field("latency_s", pa.float64()),
    pa.field("attempt", pa.int32()),
    pa.field("created_at", pa.timestamp("us")),
)

GENERATION_FAILURES = _schema(  # requests that stayed bad after every retry: visible, never padded or dropped
    pa.field("concept_set", pa.string(), nullable=False),
    pa.field("concept_id", pa.int64(), nullable=False),  # -1 = shared negatives
    pa.field("split", pa.string()),
    pa.field("purpose", pa.string(), nullable=False),
    pa.field("item", pa.string(), nullable=False),  # which request of the purpose (index or word)
    pa.field("input", pa.string()),
    pa.field("error", pa.string()),
    pa.field("history", pa.string()),  # error of each attempt, '; '-joined
    pa.field("attempts", pa.int32()),
    pa.field("llm", pa.string()),
)

TABLES: dict[str, pa.Schema] = {
    "concepts": CONCEPTS,
    "generations": GENERATIONS,
    "activations": ACTIVATIONS,
    "method_artifacts": METHOD_ARTIFACTS,
    "latent_scores": LATENT_SCORES,
    "llm_calls": LLM_CALLS,
    "generation_failures": GENERATION_FAILURES,
}

PARTITIONS: dict[str, list[str]] = {
    "concepts": ["concept_set"],
    "generations": ["concept_set"],
    # one folder per concept (examples it owns) and one for the shared negatives (concept_id=-1): a reader of
    # "concept c + shared negatives" opens two folders, never the others
    "activations": ["model", "layer", "concept_set", "split", "concept_id"],
    "method_artifacts": ["method"],
    "latent_scores": ["method"],
    "llm_calls": [],
    "generation_failures": [],
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


# -- steering half: instructions, steered generations, judge scores, perplexity ---------------------------------
STEERING_INSTRUCTIONS = _schema(  # the instruction set steering generates from (AxBench: AlpacaEval)
    pa.field("instruction_set", pa.string(), nullable=False),
    pa.field("instruction_id", pa.int64(), nullable=False),
    pa.field("instruction", pa.string(), nullable=False),
    pa.field("source", pa.string()),  # provenance: file and license
)

STEERING_INPUTS = _schema(  # per concept: the n instructions drawn for it, split into factor selection and test
    pa.field("concept_set", pa.string(), nullable=False),
    pa.field("concept_id", pa.int64(), nullable=False),
    pa.field("instruction_set", pa.string(), nullable=False),
    pa.field("n_inputs", pa.int32(), nullable=False),
    pa.field("input_id", pa.int32(), nullable=False),  # 0..n-1 in draw order (AxBench input_id)
    pa.field("instruction_id", pa.int64(), nullable=False),
    pa.field("split", pa.string(), nullable=False),  # selection | test
)

STEERING_OUTPUTS = _schema(  # one steered generation; key = output_id (hash of the key columns + config_hash)
    pa.field("output_id", pa.string(), nullable=False),
    pa.field("method", pa.string(), nullable=False),
    pa.field("model", pa.string(), nullable=False),
    pa.field("layer", pa.int32(), nullable=False),
    pa.field("concept_set", pa.string(), nullable=False),
    pa.field("concept_id", pa.int64(), nullable=False),
    pa.field("factor", pa.float64(), nullable=False),
    pa.field("input_id", pa.int32(), nullable=False),
    pa.field("split", pa.string(), nullable=False),  # selection | test
    pa.field("instruction_set", pa.string()),
    pa.field("instruction_id", pa.int64()),
    pa.field("instruction", pa.string()),
    pa.field("steering_prompt", pa.string()),  # prompt baseline: the LLM-written steering prompt (else NULL)
    pa.field("magnitude", pa.float64()),  # a_c (docs/axbench-recipes.md §4.2)
    pa.field("magnitude_source", pa.string()),  # latent_max | latent_max<=0 -> 50 | none -> 1.0 | n/a
    pa.field("strength", pa.float64()),  # factor * a_c
    pa.field("seed", pa.int64()),  # the row's sampling seed
    pa.field("generation", pa.string()),
    pa.field("n_tokens", pa.int32()),
    pa.field("finished", pa.bool_()),  # ended on end-of-turn (False: cut at max_new_tokens)
    pa.field("method_config_hash", pa.string()),  # config_hash of the method artifact used (NULL for prompt)
)

JUDGE_SCORES = _schema(  # one judge rating of one output on one criterion
    pa.field("output_id", pa.string(), nullable=False),
    pa.field("judge", pa.string(), nullable=False),  # BACKEND:MODEL
    pa.field("criterion", pa.string(), nullable=False),  # concept | instruction | fluency
    pa.field("score", pa.float64()),  # 0..2; NULL when no rating could be read (never 0 for a failure)
    pa.field("score_source", pa.string()),  # parsed | constrained (rating slot decoded by the judge model) | NULL
    pa.field("expected_score", pa.float64()),  # sum_k p(k) k over k in {0,1,2} at the rating slot, if available
    pa.field("parse_ok", pa.bool_()),  # the judge's free answer had a valid `Rating: [[k]]`
    pa.field("parse_error", pa.string()),  # empty | no_rating | not_a_number | out_of_range | transport: ...
    pa.field("raw", pa.string()),  # the judge's full answer
    pa.field("request_hash", pa.string()),  # llm_calls key of the answer
    pa.field("rubric", pa.string()),  # axw-v1 (ours) | axbench:<hash> (AxBench's, read from a checkout) | proxy-v1/-v2;
    # NULL in files written before the column existed = ours
)

JUDGE_CONFIGS = _schema(  # the settings behind each judge config_hash, so leaderboards show them (not only a hash)
    pa.field("judge", pa.string(), nullable=False),  # BACKEND:MODEL, as in judge_scores
    pa.field("judge_config_hash", pa.string(), nullable=False),  # judge_scores.config_hash
    pa.field("rubric", pa.string()),
    pa.field("rubric_source", pa.string()),  # the templates file read by --rubric-from (NULL: ours)
    pa.field("temperature", pa.float64()),
    pa.field("max_tokens", pa.int32()),
    pa.field("seed", pa.int64()),
)

OUTPUT_PERPLEXITY = _schema(  # perplexity of each generation under the unsteered target model
    pa.field("output_id", pa.string(), nullable=False),
    pa.field("model", pa.string(), nullable=False),
    pa.field("perplexity", pa.float64()),  # exp(mean CE of the generated tokens given the plain prompt)
    pa.field("n_tokens", pa.int32()),
)

JUDGE_CALIBRATION = _schema(  # one calibrated threshold pair of the proxy judge
    pa.field("calibration_id", pa.string(), nullable=False),
    pa.field("judge", pa.string(), nullable=False),  # proxy:<model>
    pa.field("rubric", pa.string()),
    pa.field("criterion", pa.string(), nullable=False),
    pa.field("measure", pa.string()),  # classifier_probability | pmi_per_token | logp_per_token |
    # distinct_token_share (fluency's repetition veto: low = high)
    pa.field("concept_set", pa.string()),
    pa.field("concept_id", pa.int64()),  # concept criterion only
    pa.field("instruction_set", pa.string()),  # instruction / fluency only
    pa.field("threshold_low", pa.float64()),  # measurement >= low rates at least 1
    pa.field("threshold_high", pa.float64()),  # measurement >= high rates 2
    pa.field("negative_quantile", pa.float64()),
    pa.field("positive_quantile", pa.float64()),  # NULL for the repetition veto (its threshold is the negatives')
    pa.field("n_negative", pa.int64()),
    pa.field("n_positive", pa.int64()),
    pa.field("negative_mean", pa.float64()),
    pa.field("positive_mean", pa.float64()),
    pa.field("auroc", pa.float64()),  # separation of the two calibration classes by the measurement
    pa.field("details", pa.string()),  # JSON: what the classes were made of
)

JUDGE_VALIDATION = _schema(  # one judge rating of one labelled text (`axw judge validate`, stages/judge_validate.py)
    pa.field("judge", pa.string(), nullable=False),  # as in judge_scores (proxy:<model>, BACKEND:MODEL)
    pa.field("judge_config_hash", pa.string(), nullable=False),  # = judge_scores.config_hash of that judge config
    pa.field("rubric", pa.string()),
    pa.field("concept_set", pa.string(), nullable=False),
    pa.field("concept_id", pa.int64(), nullable=False),
    pa.field("criterion", pa.string(), nullable=False),  # concept | instruction | fluency
    pa.field("item_id", pa.string(), nullable=False),  # set/split/example/concept/variant
    pa.field("split", pa.string()),  # where the text came from: latent_eval, or the held-out slice of train
    pa.field("example_id", pa.int64()),
    # concept: positive | negative | hard_negative; instruction: own | other; fluency: as_written | shuffled | looped
    pa.field("kind", pa.string(), nullable=False),
    pa.field("label", pa.int8(), nullable=False),  # 1 = present/relevant/fluent, 0 = absent/irrelevant/disfluent
    pa.field("rating", pa.float64()),  # the judge's 0-2 rating; NULL when its answer had none (views count it 0)
    pa.field("score_source", pa.string()),
    pa.field("instruction", pa.string()),  # what the judge was shown
    pa.field("text", pa.string()),
    pa.field("raw", pa.string()),  # the judge's answer or the proxy's measurement JSON
)

TABLES.update({
    "steering_instructions": STEERING_INSTRUCTIONS,
    "steering_inputs": STEERING_INPUTS,
    "steering_outputs": STEERING_OUTPUTS,
    "judge_scores": JUDGE_SCORES,
    "output_perplexity": OUTPUT_PERPLEXITY,
    "judge_configs": JUDGE_CONFIGS,
    "judge_calibration": JUDGE_CALIBRATION,  # the proxy judge's thresholds (axwarehouse/judging/proxy_calibration.py)
    "judge_validation": JUDGE_VALIDATION,
})
PARTITIONS.update({
    "steering_instructions": [],
    "steering_inputs": [],
    "steering_outputs": ["method"],
    "judge_scores": ["judge"],
    "output_perplexity": [],
    "judge_configs": [],
    "judge_calibration": [],
    "judge_validation": [],  # one file per validation run: its rows appear all at once
})
# --- SAEs trained by `axw sae train` (files in the SAELens layout under warehouse/saes/) ---
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

"""`axw activations`: one forward pass per example, stopped after layer L, per-token vectors into `activations`.

Incremental by key (model, layer, concept_set, split, example_id): only examples without rows are computed. Work is
written in files of whole examples, each atomically, so a killed run loses at most the file in flight and a re-run
finishes the rest without duplicates.

The forward pass runs on ``--device`` in ``--dtype`` (``auto``: bfloat16 where the device computes it natively —
CUDA, CPUs with AVX512-BF16/AMX — else float32), in batches of at most ``--batch-tokens`` padded tokens (default
by device: smaller on CPU, where it runs faster). Vectors are stored as bfloat16 bit patterns by default
(``--store-dtype float32`` keeps them exact), in one folder per owning concept (axwarehouse/activation_store.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
import torch

from axwarehouse.activation_store import STORE_DTYPES, act_columns
from axwarehouse.catalog import Catalog
from axwarehouse.errors import AxwError
from axwarehouse.lineage import config_hash
from axwarehouse.model.info import model_info
from axwarehouse.model.loader import DEFAULT_MODEL, check_device, resolve_dtype
from axwarehouse.stage_runner import Emit, Work, in_list, missing, run_stage, shardable

SPLITS = ("train", "latent_eval")


@dataclass(frozen=True)
class ActivationsConfig:
    concept_set: str
    model: str = DEFAULT_MODEL
    layer: int | None = None
    splits: tuple[str, ...] = ()
    batch_tokens: int | None = None  # padded tokens per forward batch; None: by device (capture.default_batch_tokens)
    file_tokens: int = 32768  # tokens per Parquet file (the unit of loss on a kill)
    dtype: str = "auto"  # compute dtype: auto | bfloat16 | float32 (auto = bfloat16 where the device has it natively)
    device: str = "cpu"
    store_dtype: str = "bfloat16"  # how vectors are stored: bfloat16 bit patterns | float32 (exact)
    concepts: tuple[int, ...] = ()  # only examples owned by these concepts (-1: shared negatives); empty = all


@dataclass
class ActivationsResult:
    model: str
    layer: int
    examples: int
    tokens: int
    seconds: float = 0.0
    already: int = 0
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if not self.examples:
            return f"activations {self.model} layer {self.layer}: all {self.already} examples cached, nothing to do"
        rate = self.tokens / self.seconds if self.seconds else 0.0
        return (f"activations {self.model} layer {self.layer}: {self.examples} examples, {self.tokens} tokens "
                f"in {self.seconds:.1f}s ({rate:,.0f} tok/s); {self.already} were cached")


def _check_inputs(cat: Catalog, cfg: ActivationsConfig) -> tuple[str, ...]:
    n = cat.count("generations", "concept_set = ?", [cfg.concept_set])
    if n == 0:
        raise AxwError(f"concept set {cfg.concept_set!r} has no generations (import or generate it first)")
    splits = cfg.splits or SPLITS
    have = {r[0] for r in cat.sql("SELECT DISTINCT split FROM generations WHERE concept_set = ?",
                                  [cfg.concept_set]).fetchall()}
    unknown = [s for s in splits if s not in have and s not in SPLITS]
    if unknown:
        raise AxwError(f"unknown split(s) {', '.join(unknown)} for concept set {cfg.concept_set!r}")
    return tuple(s for s in splits if s in have)


def missing_examples(cat: Catalog, concept_set: str, model: str, layer: int, splits: tuple[str, ...],
                     concepts: tuple[int, ...] = ()) -> pa.Table:
    """Generations rows (split, example_id, concept_id, input, output) that have no activations for (model, layer)
    yet (of the examples owned by ``concepts``, when given)."""
    in_splits, split_params = in_list("split", splits, "VARCHAR")
    owned, owned_params = in_list("concept_id", concepts)
    return missing(cat, "SELECT concept_set, split, example_id, concept_id, input, output FROM generations "
                        f"WHERE concept_set = ?{in_splits}{owned}", [concept_set, *split_params, *owned_params],
                   "activations", ("concept_set", "split", "example_id"), {"model": model, "layer": layer},
                   order_by=("split", "example_id")).drop_columns(["concept_set"])


def activation_row_hash(model: str, layer: int, chat, dtype: str, store_dtype: str = "float32") -> str:
    """config_hash of activation rows: what their values depend on (model, layer, rendering, compute and storage
    dtypes), not batching, device or file sizes."""
    from axwarehouse.model.chat import MAX_LENGTH

    key = {"model": model, "layer": layer, "prefix_len": chat.prefix_len, "suffix_len": chat.suffix_len,
           "max_length": MAX_LENGTH, "dtype": dtype}
    if store_dtype != "float32":  # rows stored as float32 keep the hash they had before storage dtypes existed
        key["store_dtype"] = store_dtype
    return config_hash(key)


def activation_rows(info: dict, tokenizer, prefix_len: int, batch: list[tuple[str, int, int, list[int], object]],
                    store_dtype: str = "bfloat16") -> pa.Table:
    """Per-token rows for whole examples: (split, example_id, concept_id, token ids, acts [len, d] as a tensor or
    float32 array)."""
    lengths = np.array([len(ids) for _, _, _, ids, _ in batch])
    n = int(lengths.sum())
    ids = np.concatenate([np.asarray(t, dtype=np.int32) for _, _, _, t, _ in batch])
    positions = np.concatenate([np.arange(k, dtype=np.int32) for k in lengths])
    acts = torch.cat([torch.as_tensor(a) for *_, a in batch])
    return pa.table({
        "model": pa.array([info["model"]] * n, pa.string()),
        "layer": pa.array(np.full(n, info["layer"], dtype=np.int32)),
        "concept_set": pa.array([info["concept_set"]] * n, pa.string()),
        "split": pa.array(np.repeat([s for s, *_ in batch], lengths).tolist(), pa.string()),
        "example_id": pa.array(np.repeat([e for _, e, *_ in batch], lengths).astype(np.int64)),
        "concept_id": pa.array(np.repeat([c for _, _, c, *_ in batch], lengths).astype(np.int64)),
        "position": pa.array(positions),
        "token_id": pa.array(ids),
        "token": pa.array(tokenizer.convert_ids_to_tokens(ids.tolist()), pa.string()),
        "is_prefix": pa.array(positions < prefix_len),
        **act_columns(acts, store_dtype),
    })


def _settings(cfg: ActivationsConfig) -> tuple[str, int]:
    """(compute dtype, padded tokens per batch) of ``cfg``; one-line errors for bad options."""
    from axwarehouse.model.capture import default_batch_tokens

    check_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, cfg.device)
    if cfg.batch_tokens is not None and cfg.batch_tokens < 1:
        raise AxwError(f"--batch-tokens must be at least 1 (got {cfg.batch_tokens})")
    if cfg.store_dtype not in STORE_DTYPES:
        raise AxwError(f"unknown --store-dtype {cfg.store_dtype!r} (choose {' or '.join(STORE_DTYPES)})")
    return dtype, cfg.batch_tokens or default_batch_tokens(cfg.device)


@dataclass(frozen=True)
class _Example:
    """One work unit: an example without activations, as token ids."""

    split: str
    example_id: int
    concept_id: int
    ids: list[int]


def _capture_batches(lm, layer: int, batch_tokens: int, rows: Callable[[list], pa.Table], result: ActivationsResult):
    """The batched per-unit function: examples in, their per-token rows out, one forward batch at a time."""
    from axwarehouse.model.capture import capture

    def batches(units: Sequence[_Example], emit: Emit) -> None:
        for idx, acts in capture(lm.model, lm.decoder_layers(), layer, [u.ids for u in units],
                                 lm.tokenizer.pad_token_id, batch_tokens, as_tensors=True):
            done = [units[i] for i in idx]
            result.examples += len(done)
            result.tokens += sum(len(u.ids) for u in done)
            emit(done, rows([(u.split, u.example_id, u.concept_id, u.ids, a) for u, a in zip(done, acts)]))

    return batches


@shardable(negatives=True)
def run_activations(cat: Catalog, cfg: ActivationsConfig) -> ActivationsResult:
    """Compute and store the activations that are missing for ``cfg``."""
    from axwarehouse.model.chat import MAX_LENGTH, ChatFormat
    from axwarehouse.model.loader import load

    dtype, batch_tokens = _settings(cfg)
    splits = _check_inputs(cat, cfg)
    info = model_info(cfg.model)
    layer = info.check_layer(cfg.layer)
    todo = missing_examples(cat, cfg.concept_set, info.name, layer, splits, cfg.concepts)
    in_splits, split_params = in_list("split", splits, "VARCHAR")
    owned, owned_params = in_list("concept_id", cfg.concepts)
    total = cat.count("generations", f"concept_set = ?{in_splits}{owned}",
                      [cfg.concept_set, *split_params, *owned_params])
    result = ActivationsResult(info.name, layer, 0, 0, already=total - todo.num_rows)
    if todo.num_rows == 0:
        return result
    lm = load(cfg.model, dtype)
    lm.model.to(cfg.device)
    chat = ChatFormat.of(lm.tokenizer)
    config = {**asdict(cfg), "batch_tokens": batch_tokens, "dtype": dtype, "model": info.name, "layer": layer,
              "prefix_len": chat.prefix_len, "suffix_len": chat.suffix_len, "max_length": MAX_LENGTH,
              "stored_dtype": cfg.store_dtype}
    row_hash = activation_row_hash(info.name, layer, chat, dtype, cfg.store_dtype)
    meta = {"model": info.name, "layer": layer, "concept_set": cfg.concept_set}

    def rows(batch: list) -> pa.Table:
        table = activation_rows(meta, lm.tokenizer, chat.prefix_len, batch, cfg.store_dtype)
        return table.append_column("config_hash", pa.array([row_hash] * table.num_rows))

    units = [_Example(r["split"], r["example_id"], r["concept_id"], chat.ids_for(r["split"], r["input"] or "",
                                                                                 r["output"] or ""))
             for r in todo.to_pylist()]
    started = time.perf_counter()
    work = Work("activations", units, batches=_capture_batches(lm, layer, batch_tokens, rows, result),
                weight=lambda u: len(u.ids), flush_rows=cfg.file_tokens)
    run_stage(cat, "activations", config, [work], desc=f"activations L{layer}", unit="tok")
    result.seconds = time.perf_counter() - started
    return result

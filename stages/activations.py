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

import sys
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
import torch

from axwarehouse.activation_store import STORE_DTYPES, act_columns
from axwarehouse.catalog import Catalog
from axwarehouse.errors import AxwError
from axwarehouse.lineage import config_hash
from axwarehouse.lm.info import model_info
from axwarehouse.lm.loader import DEFAULT_MODEL, check_device, resolve_dtype

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
    marks = ", ".join("?" for _ in splits)
    owned = f" AND g.concept_id IN ({', '.join(str(int(c)) for c in concepts)})" if concepts else ""
    return cat.arrow(
        f"""SELECT g.split, g.example_id, g.concept_id, g.input, g.output FROM generations g
            WHERE g.concept_set = ? AND g.split IN ({marks}){owned}
              AND NOT EXISTS (SELECT 1 FROM activations a
                              WHERE a.model = ? AND a.layer = ? AND a.concept_set = g.concept_set
                                AND a.split = g.split AND a.example_id = g.example_id)
            ORDER BY g.split, g.example_id""",
        [concept_set, *splits, model, layer],
    )


def activation_row_hash(model: str, layer: int, chat, dtype: str, store_dtype: str = "float32") -> str:
    """config_hash of activation rows: what their values depend on (model, layer, rendering, compute and storage
    dtypes), not batching, device or file sizes."""
    from axwarehouse.lm.chat import MAX_LENGTH

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


def run_activations(cat: Catalog, cfg: ActivationsConfig) -> ActivationsResult:
    """Compute and store the activations that are missing for ``cfg``."""
    import time

    from tqdm import tqdm

    from axwarehouse.lm.capture import capture, default_batch_tokens
    from axwarehouse.lm.chat import MAX_LENGTH, ChatFormat
    from axwarehouse.lm.loader import load

    check_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, cfg.device)
    if cfg.batch_tokens is not None and cfg.batch_tokens < 1:
        raise AxwError(f"--batch-tokens must be at least 1 (got {cfg.batch_tokens})")
    batch_tokens = cfg.batch_tokens or default_batch_tokens(cfg.device)
    if cfg.store_dtype not in STORE_DTYPES:
        raise AxwError(f"unknown --store-dtype {cfg.store_dtype!r} (choose {' or '.join(STORE_DTYPES)})")
    splits = _check_inputs(cat, cfg)
    info = model_info(cfg.model)
    layer = info.check_layer(cfg.layer)
    todo = missing_examples(cat, cfg.concept_set, info.name, layer, splits, cfg.concepts)
    owned = f" AND concept_id IN ({', '.join(str(int(c)) for c in cfg.concepts)})" if cfg.concepts else ""
    total = cat.count("generations", f"concept_set = ? AND split IN ({', '.join('?' for _ in splits)}){owned}",
                      [cfg.concept_set, *splits])
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
    splits_col = todo.column("split").to_pylist()
    ex_ids = todo.column("example_id").to_pylist()
    owners = todo.column("concept_id").to_pylist()
    seqs = [chat.ids_for(s, i or "", o or "") for s, i, o in
            zip(splits_col, todo.column("input").to_pylist(), todo.column("output").to_pylist())]
    layers = lm.decoder_layers()
    started = time.perf_counter()
    with cat.run("activations", config) as run:
        pending: list[tuple[str, int, int, list[int], torch.Tensor]] = []
        pending_tokens = 0

        def flush() -> None:
            nonlocal pending, pending_tokens
            if pending:
                table = activation_rows(meta, lm.tokenizer, chat.prefix_len, pending, cfg.store_dtype)
                table = table.append_column("config_hash", pa.array([row_hash] * table.num_rows))
                run.write("activations", table)
                pending, pending_tokens = [], 0

        bar = tqdm(total=sum(len(s) for s in seqs), unit="tok", desc=f"activations L{layer}", file=sys.stderr,
                   disable=None, smoothing=0.1)
        for idx, acts in capture(lm.model, layers, layer, seqs, lm.tokenizer.pad_token_id, batch_tokens,
                                 as_tensors=True):
            for i, a in zip(idx, acts):
                pending.append((splits_col[i], ex_ids[i], owners[i], seqs[i], a))
                pending_tokens += len(seqs[i])
                result.examples += 1
                result.tokens += len(seqs[i])
            bar.update(sum(len(seqs[i]) for i in idx))
            if pending_tokens >= cfg.file_tokens:
                flush()
        flush()
        bar.close()
    result.seconds = time.perf_counter() - started
    return result

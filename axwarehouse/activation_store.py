"""Cached activations: how they are encoded in Parquet and how a stage reads one concept's working set.

Storage (written by `axw activations`, see axwarehouse/schemas.py): one row per token, the vector in ``act_bf16`` —
the bfloat16 bit patterns as a ``fixed_size_list<uint16, d>`` (2 bytes per value) — or, with ``--store-dtype
float32``, exactly in ``act``. Files sit in one folder per concept::

    activations/model=M/layer=L/concept_set=S/split=P/concept_id=C/part-*.parquet     (C = -1: shared negatives)

so "concept c + the shared negatives" is two folders, whatever the number of concepts. :class:`ActivationReader`
opens those folders' files directly with pyarrow — no catalog connection, so a Ray worker can use it while the
driver holds the catalog — and counts the files and rows it read.

Older warehouses stored float32 lists directly under ``model=M/layer=L/`` without ``concept_id``. They still read:
the reader scans those files and keeps the rows of the examples asked for (slower, but nothing to migrate).

Every linear method trains and scores on a :class:`TokenMatrix`: examples are contiguous row ranges (``offsets``), so
per-example pooling is a segment reduction and scoring a concept is one matmul.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from axwarehouse.warehouse_files import hidden_prefixes, partition_slug
from axwarehouse.errors import AxwError

STORE_DTYPES = ("bfloat16", "float32")
SHARED = -1  # concept_id of the shared negatives


@dataclass
class TokenMatrix:
    """Per-token activations of a set of examples, rows ordered by (example_id, position)."""

    acts: torch.Tensor  # [n_tokens, d] float32
    example_ids: np.ndarray  # [n_examples] int64, ascending
    offsets: np.ndarray  # [n_examples + 1]: example i owns rows offsets[i]:offsets[i+1]
    positions: np.ndarray  # [n_tokens] int32
    is_prefix: np.ndarray  # [n_tokens] bool: chat-template prefix, never scored
    tokens: list[str] | None = None

    @property
    def n_examples(self) -> int:
        return len(self.example_ids)

    @property
    def token_example(self) -> np.ndarray:
        """Example index (0..n_examples-1) of every token row."""
        return np.repeat(np.arange(self.n_examples), np.diff(self.offsets))

    def select(self, example_ids: np.ndarray) -> TokenMatrix:
        """The sub-matrix of the given examples (kept in ascending example_id order)."""
        pos = np.searchsorted(self.example_ids, np.sort(example_ids))
        if np.any(pos >= len(self.example_ids)) or np.any(self.example_ids[np.minimum(pos, len(self.example_ids) - 1)]
                                                           != np.sort(example_ids)):
            raise AxwError("some examples have no cached activations (run `axw activations` to complete them)")
        starts, ends = self.offsets[pos], self.offsets[pos + 1]
        rows = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends)]) if len(pos) else np.zeros(0, int)
        offsets = np.concatenate([[0], np.cumsum(ends - starts)])
        return TokenMatrix(self.acts[torch.from_numpy(rows)], self.example_ids[pos], offsets,
                           self.positions[rows], self.is_prefix[rows],
                           [self.tokens[r] for r in rows] if self.tokens is not None else None)


def merge_tokens(parts: Sequence[TokenMatrix]) -> TokenMatrix:
    """One matrix of the examples of ``parts`` (disjoint example sets), in ascending example_id order."""
    parts = [p for p in parts if p.n_examples]
    if len(parts) == 1:
        return parts[0]
    if not parts:
        raise AxwError("no cached activations to merge")
    ex_rows = np.concatenate([p.example_ids[p.token_example] for p in parts])
    positions = np.concatenate([p.positions for p in parts])
    order = np.lexsort((positions, ex_rows))
    with_tokens = all(p.tokens is not None for p in parts)
    tokens = [t for p in parts for t in p.tokens] if with_tokens else None
    return _matrix(torch.cat([p.acts for p in parts])[torch.from_numpy(order)], ex_rows[order], positions[order],
                   np.concatenate([p.is_prefix for p in parts])[order],
                   [tokens[i] for i in order] if tokens is not None else None)


def _matrix(acts: torch.Tensor, ex_rows: np.ndarray, positions: np.ndarray, is_prefix: np.ndarray,
            tokens: list[str] | None) -> TokenMatrix:
    change = np.flatnonzero(np.diff(ex_rows)) + 1
    starts = np.concatenate([[0], change]).astype(np.int64) if len(ex_rows) else np.zeros(0, np.int64)
    offsets = np.concatenate([starts, [len(ex_rows)]])
    return TokenMatrix(acts, ex_rows[starts], offsets, positions.astype(np.int32), is_prefix.astype(bool), tokens)


# -- encoding ------------------------------------------------------------------------------------------------------
def bf16_bits(x: torch.Tensor) -> np.ndarray:
    """uint16 bit patterns of ``x`` in bfloat16 (round to nearest even when ``x`` is float32)."""
    return x.detach().to("cpu", torch.bfloat16).contiguous().view(torch.int16).numpy().view(np.uint16)


def bf16_to_float32(bits: np.ndarray) -> np.ndarray:
    """float32 values of bfloat16 bit patterns (exact: bfloat16 is the top half of a float32)."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def act_columns(acts: torch.Tensor, store_dtype: str) -> dict[str, pa.Array]:
    """The ``act`` and ``act_bf16`` columns for token vectors ``acts`` [n, d] (one of them all NULL)."""
    n, d = acts.shape
    if store_dtype == "bfloat16":
        bits = pa.FixedSizeListArray.from_arrays(pa.array(bf16_bits(acts).reshape(-1)), d)
        return {"act": pa.nulls(n, pa.list_(pa.float32())), "act_bf16": bits}
    if store_dtype == "float32":
        flat = acts.detach().to("cpu", torch.float32).numpy().reshape(-1)
        vals = pa.ListArray.from_arrays(pa.array(np.arange(0, n * d + 1, d, dtype=np.int32)), pa.array(flat))
        return {"act": vals, "act_bf16": pa.nulls(n, pa.list_(pa.uint16()))}
    raise AxwError(f"unknown --store-dtype {store_dtype!r} (choose {' or '.join(STORE_DTYPES)})")


def _decode(table: pa.Table) -> np.ndarray:
    """float32 [rows, d] of one file's rows (either column)."""
    if table.num_rows == 0:
        return np.zeros((0, 0), np.float32)
    if "act_bf16" in table.column_names and table.column("act_bf16").null_count < table.num_rows:
        col = table.column("act_bf16").combine_chunks()
        if col.null_count:
            raise AxwError("an activations file mixes bfloat16 and float32 rows")
        flat = bf16_to_float32(col.flatten().to_numpy(zero_copy_only=False))
    else:
        col = table.column("act").combine_chunks()
        flat = np.asarray(col.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)
    return flat.reshape(table.num_rows, -1)


# -- reading -------------------------------------------------------------------------------------------------------
def layer_dir(warehouse: Path, model: str, layer: int) -> Path:
    return Path(warehouse) / "activations" / f"model={partition_slug(model)}" / f"layer={partition_slug(layer)}"


def partition_dir(warehouse: Path, model: str, layer: int, concept_set: str, split: str, concept_id: int) -> Path:
    """The folder of one concept's activation files (``concept_id`` -1: the shared negatives)."""
    return (layer_dir(warehouse, model, layer) / f"concept_set={partition_slug(concept_set)}"
            / f"split={partition_slug(split)}" / f"concept_id={partition_slug(int(concept_id))}")


class ActivationReader:
    """Reads the activation files of one (model, layer, concept set, split) straight from the warehouse folder.

    ``files_read`` and ``rows_read`` count what it opened, so tests (and curious users) can check that a stage read
    only the partitions it needed.
    """

    def __init__(self, warehouse: Path, model: str, layer: int, concept_set: str, split: str,
                 with_tokens: bool = False):
        self.warehouse, self.model, self.layer = Path(warehouse), model, layer
        self.concept_set, self.split, self.with_tokens = concept_set, split, with_tokens
        self.files_read = 0
        self.rows_read = 0
        self._hidden = hidden_prefixes(self.warehouse)  # files of a commit in progress: not there yet

    def _listed(self, files: Iterable[Path]) -> list[Path]:
        return sorted(p for p in files if not p.name.startswith(self._hidden))

    def _columns(self, path: Path) -> list[str]:
        names = set(pq.read_schema(path).names)
        want = ["example_id", "position", "is_prefix", "act", "act_bf16"]
        want += ["token"] if self.with_tokens else []
        return [c for c in want if c in names]

    def _read_files(self, files: Iterable[Path], example_ids: np.ndarray | None
                    ) -> list[tuple[pa.Table, np.ndarray]]:
        out = []
        for path in files:
            table = pq.read_table(path, columns=self._columns(path))
            self.files_read += 1
            self.rows_read += table.num_rows
            if example_ids is not None:
                table = table.filter(pc.is_in(table.column("example_id"), pa.array(example_ids, pa.int64())))
            if table.num_rows:
                out.append((table, _decode(table)))
        return out

    def concept_files(self, concept_id: int) -> list[Path]:
        folder = partition_dir(self.warehouse, self.model, self.layer, self.concept_set, self.split, concept_id)
        return self._listed(folder.glob("*.parquet")) if folder.is_dir() else []

    def may_hold(self, concept_id: int) -> bool:
        """Whether any file may hold rows of ``concept_id``: its folder has files."""
        return bool(self.concept_files(concept_id))

    def read(self, concept_ids: Sequence[int] | None, example_ids: Sequence[int] | None = None) -> TokenMatrix:
        """Rows of the examples owned by ``concept_ids`` (None: the whole split), optionally only ``example_ids``.

        An empty selection gives a matrix with no examples.
        """
        ex = None if example_ids is None else np.asarray(example_ids, dtype=np.int64)
        if concept_ids is None:
            base = (layer_dir(self.warehouse, self.model, self.layer)
                    / f"concept_set={partition_slug(self.concept_set)}" / f"split={partition_slug(self.split)}")
            files = self._listed(base.rglob("*.parquet")) if base.is_dir() else []
        else:
            files = [f for c in concept_ids for f in self.concept_files(c)]
        return self._assemble(self._read_files(files, ex))

    def _assemble(self, pieces: list[tuple[pa.Table, np.ndarray]]) -> TokenMatrix:
        if not pieces:
            d = 0
            return TokenMatrix(torch.zeros((0, d)), np.zeros(0, np.int64), np.zeros(1, np.int64),
                               np.zeros(0, np.int32), np.zeros(0, bool), [] if self.with_tokens else None)
        dims = {a.shape[1] for _, a in pieces}
        if len(dims) != 1:
            raise AxwError(f"cached activations for {self.model} layer {self.layer} have mixed widths {sorted(dims)}")
        acts = np.concatenate([a for _, a in pieces]) if len(pieces) > 1 else pieces[0][1]
        if not np.isfinite(acts).all():
            raise AxwError(f"cached activations for {self.model} layer {self.layer}, concept set "
                           f"{self.concept_set!r} contain inf/NaN (an earlier axw stored float16, which Gemma-family "
                           "activations overflow): delete that model/layer folder under warehouse/activations/ and "
                           "run `axw activations` again")
        ex_rows = np.concatenate([t.column("example_id").to_numpy() for t, _ in pieces])
        positions = np.concatenate([t.column("position").to_numpy() for t, _ in pieces])
        prefix = np.concatenate([t.column("is_prefix").to_numpy(zero_copy_only=False) for t, _ in pieces])
        tokens = [s for t, _ in pieces for s in t.column("token").to_pylist()] if self.with_tokens else None
        order = np.lexsort((positions, ex_rows))
        if np.any(np.diff(order) != 1):
            acts = acts[order]
            tokens = [tokens[i] for i in order] if tokens is not None else None
        acts = np.ascontiguousarray(acts, dtype=np.float32)
        acts_t = torch.from_numpy(acts if acts.flags.writeable else acts.copy())
        return _matrix(acts_t, ex_rows[order], positions[order], prefix[order], tokens)

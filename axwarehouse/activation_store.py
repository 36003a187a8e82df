"""Read cached activations out of the catalog as one token matrix per (model, layer, concept set, split).

Every linear method trains and scores on this matrix: examples are contiguous row ranges (``offsets``), so
per-example pooling is a segment reduction and scoring every concept is one matmul.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from axwarehouse.catalog import Catalog
from axwarehouse.errors import AxwError


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


def load_tokens(cat: Catalog, model: str, layer: int, concept_set: str, split: str,
                with_tokens: bool = False) -> TokenMatrix:
    """All cached activations of a split; AxwError when there are none."""
    cols = "example_id, position, is_prefix, act" + (", token" if with_tokens else "")
    table = cat.arrow(
        f"""SELECT {cols} FROM activations
            WHERE model = ? AND layer = ? AND concept_set = ? AND split = ?
            ORDER BY example_id, position""",
        [model, layer, concept_set, split],
    )
    if table.num_rows == 0:
        raise AxwError(f"no cached activations for {model} layer {layer}, concept set {concept_set!r}, split "
                       f"{split} (run `axw activations` first)")
    act = table.column("act").combine_chunks()
    flat = act.flatten().to_numpy(zero_copy_only=False)
    d = len(flat) // table.num_rows
    acts = torch.from_numpy(np.array(flat, dtype=np.float32).reshape(table.num_rows, d))  # writable copy
    if not torch.isfinite(acts).all():
        raise AxwError(f"cached activations for {model} layer {layer}, concept set {concept_set!r} contain inf/NaN "
                       "(an earlier axw stored float16, which Gemma-family activations overflow): delete that "
                       "model/layer folder under warehouse/activations/ and run `axw activations` again")
    ex = table.column("example_id").to_numpy()
    change = np.flatnonzero(np.diff(ex)) + 1
    starts = np.concatenate([[0], change])
    offsets = np.concatenate([starts, [len(ex)]])
    tokens = table.column("token").to_pylist() if with_tokens else None
    return TokenMatrix(acts, ex[starts], offsets, table.column("position").to_numpy().astype(np.int32),
                       table.column("is_prefix").to_numpy(zero_copy_only=False).astype(bool), tokens)

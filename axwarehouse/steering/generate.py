"""Batched steered generation: many (prompt, direction, strength, seed) rows in one left-padded batch per step.

Every row carries its own steering delta (see :mod:`axwarehouse.steering.intervention`) and its own random seed:
sampling draws each row's next token from a per-row ``torch.Generator``, so a row's text does not depend on which
other rows share its batch, on the batch size or on a resumed run. Greedy mode (temperature 0) takes the argmax.

Rows are sorted by prompt length before batching (less padding); results come back in input order.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from axwarehouse.steering.intervention import EDITS, Steerer


@dataclass(frozen=True)
class GenRow:
    """One generation: prompt token ids, the steering parameters of its row, its seed."""

    prompt_ids: tuple[int, ...]
    direction: np.ndarray | None = None  # [d]; None = unsteered
    strength: float = 0.0  # factor × magnitude a_c
    seed: int = 0


@dataclass
class GenOutput:
    token_ids: list[int]  # new tokens up to (not including) the first end-of-turn token
    text: str
    finished: bool  # stopped on an end-of-turn token (False: hit max_new_tokens)


class RowSeededSampler(LogitsProcessor):
    """Sample each row's next token with its own generator; every other logit becomes -inf, so the greedy pick of
    ``generate`` is the sampled token. Temperature is applied here (no top-k / top-p: AxBench samples plainly).

    Inverse-CDF sampling: one uniform draw per row and step, looked up in the row's cumulative distribution (exact,
    and ~100x cheaper than ``torch.multinomial`` over a 49k vocabulary)."""

    def __init__(self, seeds: Sequence[int], temperature: float):
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.temperature = temperature

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        cdf = torch.softmax(scores.double() / self.temperature, dim=-1).cumsum(dim=-1)
        # the draws come from CPU generators, so a row's text is the same on every device
        u = torch.cat([torch.rand(1, generator=g, dtype=torch.float64) for g in self.generators]).to(scores.device)
        picked = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None]).clamp_max(scores.shape[-1] - 1)
        out = torch.full_like(scores, float("-inf"))
        out.scatter_(1, picked, 0.0)
        return out


def eos_ids(lm) -> set[int]:
    """End-of-turn ids: the generation config's and the tokenizer's."""
    cfg = lm.model.generation_config.eos_token_id
    ids = set(cfg if isinstance(cfg, list) else [cfg]) | {lm.tokenizer.eos_token_id}
    ids.discard(None)
    return ids


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, s in enumerate(seqs):
        ids[row, width - len(s):] = torch.tensor(list(s), dtype=torch.long)
        mask[row, width - len(s):] = 1
    return {"input_ids": ids, "attention_mask": mask}


def generate_batch(lm, steerer: Steerer, rows: Sequence[GenRow], max_new_tokens: int, temperature: float,
                   edit_kind: str = "addition") -> list[GenOutput]:
    """Generate every row of ``rows`` in one padded batch (rows may have different directions and strengths)."""
    tok = lm.tokenizer
    inputs = {k: v.to(lm.model.device) for k, v in left_pad([r.prompt_ids for r in rows], tok.pad_token_id).items()}
    edit = None
    if any(r.direction is not None and r.strength != 0.0 for r in rows):
        d = lm.hidden_size
        dirs = torch.stack([torch.zeros(d) if r.direction is None else torch.as_tensor(r.direction, dtype=torch.float32)
                            for r in rows])
        strengths = torch.tensor([r.strength if r.direction is not None else 0.0 for r in rows])
        edit = EDITS[edit_kind](dirs, strengths)
    kwargs = {"max_new_tokens": max_new_tokens, "do_sample": False, "pad_token_id": tok.pad_token_id,
              "temperature": None, "top_p": None, "top_k": None}
    if temperature > 0:
        kwargs["logits_processor"] = LogitsProcessorList([RowSeededSampler([r.seed for r in rows], temperature)])
    out = steerer.generate(inputs, edit, **kwargs)
    new = out[:, inputs["input_ids"].shape[1]:].tolist()
    stop = eos_ids(lm)
    results = []
    for row in new:
        end = next((k for k, t in enumerate(row) if t in stop), None)
        body = row if end is None else row[:end]
        results.append(GenOutput(body, tok.decode(body, skip_special_tokens=True), end is not None))
    return results


def generate_rows(lm, steerer: Steerer, rows: Sequence[GenRow], *, max_new_tokens: int = 128,
                  temperature: float = 1.0, batch_size: int = 32, edit_kind: str = "addition",
                  on_batch: Callable[[list[int], list[GenOutput], float], None] | None = None) -> list[GenOutput]:
    """Generate all ``rows`` in length-sorted batches; ``on_batch(indices, outputs, seconds)`` after each batch
    (the stage writes there, so a killed run keeps every finished batch)."""
    order = sorted(range(len(rows)), key=lambda i: len(rows[i].prompt_ids))
    results: list[GenOutput | None] = [None] * len(rows)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        t0 = time.perf_counter()
        outs = generate_batch(lm, steerer, [rows[i] for i in idx], max_new_tokens, temperature, edit_kind)
        for i, o in zip(idx, outs):
            results[i] = o
        if on_batch:
            on_batch(idx, outs, time.perf_counter() - t0)
    return results  # type: ignore[return-value]

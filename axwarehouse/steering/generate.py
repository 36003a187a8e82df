"""Batched steered generation: many (prompt, direction, strength, seed) rows, each with its own steering delta.

Two engines generate the same rows:

* ``hf`` (default): ``model.generate`` on left-padded, length-sorted batches of ``batch_size`` rows with the pyvene
  intervention (:mod:`axwarehouse.steering.intervention`); the reference the engine is tested against.
* ``continuous`` (opt-in, :mod:`axwarehouse.steering.engine`): a continuous-batching decode loop over slots with a
  preallocated KV cache and a plain forward hook at block L.
* ``vllm`` (opt-in, needs vLLM installed, :mod:`axwarehouse.steering.vllm_engine`): vLLM's engine, each request
  steered inside its dynamic batch.

All three sample with :func:`axwarehouse.steering.sampling.sample_tokens`: a row's draw at its t-th new token is a hash
of (row seed, t), so a row's text does not depend on which other rows share its batch, on the batch size, on the
engine or on a resumed run. Greedy mode (temperature 0) takes the argmax. Results come back in input order.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from axwarehouse.errors import AxwError
from axwarehouse.model.capture import left_pad
from axwarehouse.steering.intervention import EDITS, Steerer
from axwarehouse.steering.rows import GenOutput, GenRow, cut_at_stop, eos_ids
from axwarehouse.steering.sampling import sample_tokens, seed_key

ENGINES = ("continuous", "hf", "vllm")
# hf stays the default until the continuous engine is measurably faster on an idle machine and a sampled row's
# text no longer depends on which rows share its call (its attention width and prefill padding do today: a
# resumed run can draw one token differently, tests/test_steer_stage.py)
DEFAULT_ENGINE = "hf"


class CounterSampler(LogitsProcessor):
    """``generate``'s per-step hook for the ``hf`` engine: picks each row's token with
    :func:`~axwarehouse.steering.sampling.sample_tokens` and makes every other logit -inf, so the greedy pick of
    ``generate`` is the sampled token. The new-token index is the sequence length minus the padded prompt width."""

    def __init__(self, seeds: Sequence[int], temperature: float, prompt_width: int):
        self.seeds = torch.tensor([seed_key(s) for s in seeds], dtype=torch.long)
        self.temperature = temperature
        self.prompt_width = prompt_width

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        steps = torch.full_like(self.seeds, input_ids.shape[1] - self.prompt_width)
        picked = sample_tokens(scores, self.seeds, steps, self.temperature).to(scores.device)
        out = torch.full_like(scores, float("-inf"))
        out.scatter_(1, picked[:, None], 0.0)
        return out


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
        kwargs["logits_processor"] = LogitsProcessorList([CounterSampler([r.seed for r in rows], temperature,
                                                                         inputs["input_ids"].shape[1])])
    out = steerer.generate(inputs, edit, **kwargs)
    new = out[:, inputs["input_ids"].shape[1]:].tolist()
    stop = eos_ids(lm)
    return [cut_at_stop(tok, row, stop) for row in new]


def generate_rows(lm, steerer: Steerer, rows: Sequence[GenRow], *, max_new_tokens: int = 128,
                  temperature: float = 1.0, batch_size: int | None = None, edit_kind: str = "addition",
                  on_batch: Callable[[list[int], list[GenOutput], float], None] | None = None,
                  engine: str = DEFAULT_ENGINE) -> list[GenOutput]:
    """Generate all ``rows`` with ``steerer``'s model and layer; ``on_batch(indices, outputs, seconds)`` whenever rows
    finish (the stage writes there, so a killed run keeps every finished row).

    ``engine``: ``continuous`` (``batch_size`` = rows decoded together, default
    :data:`~axwarehouse.steering.engine.DEFAULT_SLOTS`), ``vllm`` (``batch_size`` = vLLM's ``max_num_seqs``,
    default :data:`~axwarehouse.steering.vllm_engine.DEFAULT_MAX_ROWS`) or ``hf`` (length-sorted padded batches of
    ``batch_size``, default 32). Edits other than ``addition`` always go through ``hf``, which applies any
    registered edit."""
    if engine not in ENGINES:
        raise AxwError(f"unknown generation engine {engine!r} (choose from {', '.join(ENGINES)})")
    if engine == "vllm" and edit_kind == "addition":
        from axwarehouse.steering.vllm_engine import generate_vllm

        return generate_vllm(lm, lm.name, rows, layer=steerer.layer, max_new_tokens=max_new_tokens,
                             temperature=temperature, dtype=lm.dtype, max_rows=batch_size, on_rows=on_batch)
    if engine == "continuous" and edit_kind == "addition":
        from axwarehouse.steering.engine import DEFAULT_SLOTS, generate_slots

        outs, _stats = generate_slots(lm, rows, layer=steerer.layer, max_new_tokens=max_new_tokens,
                                      temperature=temperature, slots=batch_size or DEFAULT_SLOTS, on_rows=on_batch)
        return outs
    batch_size = batch_size or 32
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

"""The ``continuous`` engine of `axw steer` (opt-in: ``--engine continuous``): a continuous-batching decode loop
over slots with a preallocated KV cache.

Why not ``model.generate`` on padded batches (the ``hf`` engine, kept as the reference): a padded batch computes
every row until its longest row ends, its ``DynamicCache`` concatenates the whole cache on every step, and a
per-step sampler loops over rows. Here:

* **Slots.** Up to ``slots`` rows decode together. Live rows always occupy slots ``[0, n)``: when rows finish, the
  live rows from the end move into the holes (their cache columns are copied once), so a step computes live rows
  only. Waiting rows (sorted by prompt length) are prefilled in waves into the free slots ``[n, n + m)`` as soon as
  ``refill`` slots are free, so a large sweep streams through a full batch instead of padding to its longest row.
* **Cache.** :class:`SlotCache` holds, per layer, keys and values ``[slots, kv_heads, max_len, head_dim]``
  allocated once. A slot's row sits at its own columns (its left-padded prompt, then one column per new token) with
  its own rotary positions; a step writes one column per row and attends through an explicit boolean mask. It
  answers the ``update`` call of the transformers attention modules, so the model's own forward (any family
  transformers implements; sliding-window layers get their own mask) runs unchanged.
* **Steering.** A plain forward hook on decoder block L adds each slot's ``factor · magnitude · w`` to the block's
  output at every position of the prompt's prefill and of every decoding step: AxBench's intervention, the same
  edit as :class:`~axwarehouse.steering.intervention.AdditionEdit` (delta cast to the model's dtype, then added).
* **Sampling.** :func:`~axwarehouse.steering.sampling.sample_tokens`: greedy or a counter-based draw per (row seed,
  token index), vectorised over rows. Per step, Python work does not grow with the number of rows; only finished
  rows (once each) and prefill waves cost Python.

Results come back in input order; ``on_rows(indices, outputs, seconds)`` is called as rows finish, so the stage
writes them while the sweep goes on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from axwarehouse import lazy_imports
from axwarehouse.model.loader import cache_kwarg, decoder_layers, text_config
from axwarehouse.steering.rows import GenOutput, eos_ids
from axwarehouse.steering.sampling import sample_tokens, seed_key

DEFAULT_SLOTS = 64


@dataclass(frozen=True)
class EngineStats:
    """What one :func:`generate_slots` call did (benchmarks print it)."""

    rows: int
    new_tokens: int
    decode_steps: int
    prefill_waves: int
    seconds: float


class SlotCache:
    """Per-layer preallocated keys/values; implements the one method transformers' attention calls, ``update``.

    Before each forward the engine says which slots it covers (``begin``) and where each row writes: a prefill
    writes its whole (left-padded) block at columns ``[0, width)``; a decode step writes one column per row at
    ``cols`` and attends to ``[0, width)`` (the mask hides the columns a row does not own)."""

    is_compileable = False

    def __init__(self, n_layers: int, slots: int, kv_heads: int, max_len: int, head_dim: int, dtype, device):
        shape = (slots, kv_heads, max_len, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self._lo, self._hi, self._cols, self._width = 0, 0, None, 0

    def begin(self, lo: int, hi: int, width: int, cols: torch.Tensor | None) -> None:
        """The next forward covers slots ``[lo, hi)``; ``cols`` [hi-lo] = decode columns, None = prefill."""
        self._lo, self._hi, self._width, self._cols = lo, hi, width, cols

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args, **kwargs):
        k, v = self.keys[layer_idx], self.values[layer_idx]
        lo, hi = self._lo, self._hi
        if self._cols is None:  # prefill: the rows' whole blocks
            k[lo:hi, :, : key.shape[2]] = key
            v[lo:hi, :, : key.shape[2]] = value
            return key, value
        rows = torch.arange(lo, hi, device=key.device)
        k[rows, :, self._cols] = key[:, :, 0]
        v[rows, :, self._cols] = value[:, :, 0]
        return k[lo:hi, :, : self._width], v[lo:hi, :, : self._width]

    def move(self, dst: torch.Tensor, src: torch.Tensor, width: int) -> None:
        """Copy the cache columns ``[0, width)`` of slots ``src`` into slots ``dst``."""
        for buf in (*self.keys, *self.values):
            buf[dst, :, :width] = buf[src, :, :width]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self._width


def _kv_layout(model) -> tuple[int, int, int]:
    """(layers, kv_heads, head_dim) from the model's config."""
    cfg = text_config(model.config)
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    return cfg.num_hidden_layers, getattr(cfg, "num_key_value_heads", None) or heads, head_dim


class _Masks:
    """Boolean attention masks (True = attend) in the form the model's forward takes: one 4-D tensor, or for models
    with sliding-window layers a dict per layer type (transformers' Gemma-2/3 forwards accept it)."""

    def __init__(self, model):
        cfg = text_config(model.config)
        types = set(getattr(cfg, "layer_types", None) or [])
        self.window = getattr(cfg, "sliding_window", None) if "sliding_attention" in types else None
        self.types = types

    def build(self, q_pos: torch.Tensor, k_pos: torch.Tensor, k_ok: torch.Tensor):
        """``q_pos`` [rows, q] and ``k_pos`` [rows, k] rotary positions, ``k_ok`` [rows, k] = column holds a token of
        the row. A query sees valid keys at positions <= its own (a padding query, at position 0, sees the row's first
        token, so no query row is empty and nothing becomes NaN)."""
        causal = k_ok[:, None, :] & (k_pos[:, None, :] <= q_pos[:, :, None])
        full = causal[:, None]
        if self.window is None:
            return full
        near = (q_pos[:, :, None] - k_pos[:, None, :]) < self.window
        out = {t: full for t in self.types}
        out["sliding_attention"] = (causal & near)[:, None]
        return out


class _SteeringHook:
    """Adds ``delta`` [rows, d] (the slots of the current forward) to decoder block L's output at every position."""

    def __init__(self, block):
        self.delta: torch.Tensor | None = None
        self.handle = block.register_forward_hook(self)

    def __call__(self, _module, _inputs, output):
        if self.delta is None:
            return output
        if isinstance(output, tuple):
            return (output[0] + self.delta[:, None, :],) + tuple(output[1:])
        return output + self.delta[:, None, :]


@lazy_imports.inference_mode
def generate_slots(lm, rows: Sequence, *, layer: int, max_new_tokens: int, temperature: float,
                   slots: int = DEFAULT_SLOTS, refill: int | None = None,
                   on_rows: Callable[[list[int], list, float], None] | None = None) -> tuple[list, EngineStats]:
    """Generate ``rows`` (:class:`~axwarehouse.steering.rows.GenRow`) with each row's steering delta added at
    the output of decoder block ``layer``; returns the outputs in input order and what the loop did.

    ``slots``: rows decoded together (the batch); ``refill``: free slots that trigger a prefill wave (default an
    eighth of ``slots``)."""

    model, tok = lm.model, lm.tokenizer
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    n_rows = len(rows)
    results: list = [None] * n_rows
    t_start = time.perf_counter()
    if n_rows == 0:
        return results, EngineStats(0, 0, 0, 0, 0.0)
    slots = max(1, min(slots, n_rows))
    refill = max(1, refill if refill is not None else slots // 8)
    n_layers, kv_heads, head_dim = _kv_layout(model)
    max_prompt = max(len(r.prompt_ids) for r in rows)
    max_len = max_prompt + max_new_tokens
    cache = SlotCache(n_layers, slots, kv_heads, max_len, head_dim, dtype, device)
    masks = _Masks(model)
    cache_arg = cache_kwarg(model)
    stop = torch.tensor(sorted(eos_ids(lm)), dtype=torch.long, device=device)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else int(stop[0])

    def per_slot(dt=torch.long):
        return torch.zeros(slots, dtype=dt, device=device)

    # per-slot state: cache column of the row's first token, next write column, next rotary position, new tokens so
    # far, seed, last token, steering delta; the generated tokens; which input row a slot holds (Python, for output)
    start, col, pos, step, seed, last = (per_slot() for _ in range(6))
    delta = torch.zeros(slots, lm.hidden_size, dtype=dtype, device=device)
    out = torch.zeros(slots, max_new_tokens, dtype=torch.long, device=device)
    owner: list[int] = [-1] * slots
    steered = any(r.direction is not None and r.strength != 0.0 for r in rows)
    hook = _SteeringHook(decoder_layers(model)[layer]) if steered else None
    waiting = sorted(range(n_rows), key=lambda i: len(rows[i].prompt_ids))[::-1]  # pop() = shortest first
    n = 0  # live slots [0, n)
    steps = waves = produced = 0
    stamp = time.perf_counter()

    def forward(input_ids, position_ids, mask, lo: int, hi: int, width: int, cols):
        cache.begin(lo, hi, width, cols)
        if hook is not None:
            hook.delta = delta[lo:hi]
        logits = model(input_ids=input_ids, position_ids=position_ids, attention_mask=mask, use_cache=True,
                       logits_to_keep=1, **{cache_arg: cache}).logits[:, -1]
        return logits.float()

    def advance(lo: int, hi: int, logits: torch.Tensor) -> None:
        """Sample the next token of slots [lo, hi), record it, and retire the slots that finished."""
        nonlocal produced, stamp
        picked = sample_tokens(logits, seed[lo:hi], step[lo:hi], temperature)
        idx = torch.arange(lo, hi, device=device)
        out[idx, step[lo:hi]] = picked
        last[lo:hi] = picked
        is_eos = torch.isin(picked, stop)
        step[lo:hi] += 1
        done = (is_eos | (step[lo:hi] >= max_new_tokens)).nonzero()[:, 0]
        if done.numel() == 0:
            return
        done_slots = (done + lo).tolist()
        eos_flags = is_eos[done].tolist()
        lengths = step[done + lo].tolist()
        finished_rows, finished_out = [], []
        for s, hit, length in zip(done_slots, eos_flags, lengths):
            body = out[s, : length - 1 if hit else length].tolist()
            res = GenOutput(body, tok.decode(body, skip_special_tokens=True), bool(hit))
            results[owner[s]] = res
            finished_rows.append(owner[s])
            finished_out.append(res)
            owner[s] = -1
            produced += len(body)
        _compact(set(done_slots))
        if on_rows is not None:
            now = time.perf_counter()
            on_rows(finished_rows, finished_out, now - stamp)
            stamp = now

    def _compact(dead: set[int]) -> None:
        """Move the live rows beyond the new end into the holes the finished rows left below it."""
        nonlocal n
        new_n = n - len(dead)
        holes = [s for s in range(new_n) if s in dead]
        tails = [s for s in range(new_n, n) if s not in dead]
        if holes:
            dst = torch.tensor(holes, device=device)
            src = torch.tensor(tails, device=device)
            cache.move(dst, src, int(col[src].max()))
            for state in (start, col, pos, step, seed, last, delta, out):
                state[dst] = state[src]
            for h, t in zip(holes, tails):
                owner[h], owner[t] = owner[t], -1
        n = new_n

    def prefill() -> None:
        """Prefill the shortest waiting rows into the free slots [n, slots) (one left-padded forward)."""
        nonlocal n, waves
        take = [waiting.pop() for _ in range(min(slots - n, len(waiting)))]
        lo, hi = n, n + len(take)
        lens = torch.tensor([len(rows[i].prompt_ids) for i in take], device=device)
        width = int(lens.max())
        ids = torch.full((len(take), width), pad_id, dtype=torch.long)
        for k, i in enumerate(take):
            p = rows[i].prompt_ids
            ids[k, width - len(p):] = torch.tensor(p, dtype=torch.long)
            owner[lo + k] = i
        start[lo:hi] = width - lens
        col[lo:hi] = width
        pos[lo:hi] = lens
        step[lo:hi] = 0
        seed[lo:hi] = torch.tensor([seed_key(rows[i].seed) for i in take], device=device)
        if hook is not None:  # as AdditionEdit.of: float32 direction x float32 strength, then the model's dtype
            dirs = torch.stack([torch.zeros(lm.hidden_size) if rows[i].direction is None else
                                torch.as_tensor(rows[i].direction, dtype=torch.float32) for i in take])
            strengths = torch.tensor([0.0 if rows[i].direction is None else rows[i].strength for i in take],
                                     dtype=torch.float32)
            delta[lo:hi] = (dirs * strengths[:, None]).to(device=device, dtype=dtype)
        cols = torch.arange(width, device=device)[None, :]
        rel = (cols - start[lo:hi, None]).clamp_min(0)
        mask = masks.build(rel, rel, cols >= start[lo:hi, None])
        n = hi
        waves += 1
        advance(lo, hi, forward(ids.to(device), rel, mask, lo, hi, width, None))

    try:
        while waiting or n:
            if waiting and (slots - n >= refill or n == 0):
                prefill()
                continue
            width = int(col[:n].max()) + 1
            cols = torch.arange(width, device=device)[None, :]
            k_pos = cols - start[:n, None]
            mask = masks.build(pos[:n, None], k_pos, (cols >= start[:n, None]) & (cols <= col[:n, None]))
            logits = forward(last[:n, None], pos[:n, None], mask, 0, n, width, col[:n])
            col[:n] += 1
            pos[:n] += 1
            steps += 1
            advance(0, n, logits)
    finally:
        if hook is not None:
            hook.handle.remove()
    return results, EngineStats(n_rows, produced, steps, waves, time.perf_counter() - t_start)

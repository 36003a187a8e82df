"""Counter-based sampling: a row's next token depends only on its logits, its seed and the token's index.

The uniform draw of row ``r`` at new-token index ``t`` is ``u = f(seed_r, t)``, a fixed integer hash, computed for
all rows of a step in a few vectorised integer operations (no per-row generator, no Python loop over rows). So a
row's sampled text is the same whatever else shares its batch, whatever the batch size, the engine, a resumed run or
the device (the hash runs in int64 on any device; each product stays below 2**63, so no step relies on overflow).

The token is then drawn by inverse CDF: the first vocabulary index whose cumulative probability (float64, after
dividing the logits by the temperature) exceeds ``u`` times the total. No top-k / top-p: AxBench samples plainly.
"""

from __future__ import annotations

import torch

_M32 = 0xFFFFFFFF
_MUL = 0x45D9F3B  # < 2**27: a 32-bit value times it stays far below 2**63
_LANE = 0x85EBCA6B
_SEED_SALT = 0x9E3779B9


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A bijective avalanche hash of 32-bit values held in int64 (xor-shift / odd multiply, twice)."""
    x = (((x >> 16) ^ x) * _MUL) & _M32
    x = (((x >> 16) ^ x) * _MUL) & _M32
    return (x >> 16) ^ x


def uniforms(seeds: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """One float64 draw in [0, 1) per row: ``seeds`` and ``steps`` are int64 tensors of the same shape."""
    seeds = seeds.to(torch.int64)
    steps = steps.to(torch.int64)
    key = _mix32((seeds & _M32) ^ _mix32(((seeds >> 32) & _M32) ^ _SEED_SALT))
    hi = _mix32(key ^ _mix32(steps & _M32))
    lo = _mix32(hi ^ _LANE)
    return ((hi << 21) + (lo >> 11)).to(torch.float64) / float(2**53)


def sample_tokens(logits: torch.Tensor, seeds: torch.Tensor, steps: torch.Tensor, temperature: float) -> torch.Tensor:
    """Next token per row from ``logits`` [rows, vocab]: argmax when ``temperature`` is 0, else an inverse-CDF draw
    with the row's counter-based uniform."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    cdf = torch.softmax(logits.double() / temperature, dim=-1).cumsum(dim=-1)
    u = uniforms(seeds, steps).to(cdf.device)
    picked = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None])
    return picked[:, 0].clamp_max(logits.shape[-1] - 1)


def seed_key(seed: int) -> int:
    """A row seed as the non-negative int64 the sampler hashes."""
    return int(seed) & 0x7FFFFFFFFFFFFFFF

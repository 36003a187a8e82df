"""Train a TopK SAE (Gao et al. 2024) on cached residual-stream vectors: the offline stand-in for GemmaScope.

z = TopK(ReLU((x − b_dec) W_enc + b_enc)), x̂ = z W_dec + b_dec, loss = mean squared error. Inputs are scaled by one
scalar so the mean vector norm is √d (learning rates then transfer across models); the scale is folded back into
the saved weights, so the file encodes raw activations. Decoder rows are kept at unit norm (gradient component along
each row removed before the step, rows renormalised after), W_enc starts as W_decᵀ and b_dec at the data mean.

Streaming: the tokens come as chunks (one concept's partition, the shared negatives) that are loaded on demand, so
memory holds a shuffle buffer of at most ~``SHUFFLE_TOKENS`` tokens plus one chunk, never the whole split. One pass
computes the input scale and the mean (float64 sums), each epoch visits the chunks in a seeded random order and
shuffles tokens within the buffer (tokens left over after the last full batch carry into the next buffer), and a
last pass measures FVU and live features. A fully in-memory tensor is the one-chunk case: when it fits the buffer,
each epoch is a shuffle of every token, as before streaming. The buffer size is a constant, not a config field: like
the rest of the algorithm it is versioned by the code version stamped on every row.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from axwarehouse.sae.layout import SAE


@dataclass(frozen=True)
class TopKConfig:
    d_sae: int = 4096
    k: int = 32
    epochs: int = 3
    batch_tokens: int = 4096
    lr: float = 1e-3
    seed: int = 42


SHUFFLE_TOKENS = 1 << 15  # tokens shuffled together: 300 MB of float32 at d = 2304, about three concepts

Chunk = Callable[[], torch.Tensor]  # loads one chunk of tokens [n, d] (float32) when called


class NoTokens(ValueError):
    """Every chunk is empty: there is nothing to train on."""


def fraction_of_variance_unexplained(sae: SAE, x: torch.Tensor | Sequence[Chunk], chunk: int = 8192) -> float:
    """Σ‖x − x̂‖² / Σ‖x − mean(x)‖² over ``x`` (1 − R²): a tensor, or chunk loaders read one at a time."""
    chunks = _as_chunks(x)
    _, _, mean = _moments(chunks)
    return _evaluate(sae, chunks, mean.float(), chunk)[0]


def _as_chunks(x: torch.Tensor | Sequence[Chunk]) -> Sequence[Chunk]:
    return [lambda: x] if isinstance(x, torch.Tensor) else x


def _moments(chunks: Sequence[Chunk]) -> tuple[int, float, torch.Tensor]:
    """(tokens, mean vector norm, mean vector in float64) in one pass over the chunks."""
    n, norm_sum, total = 0, 0.0, None
    for load in chunks:
        x = load()
        if not len(x):
            continue
        n += len(x)
        norm_sum += float(x.norm(dim=1).double().sum())
        part = x.double().sum(0)
        total = part if total is None else total + part
    if total is None:
        raise NoTokens("no tokens to train the SAE on")
    return n, norm_sum / n, total / n


def _evaluate(sae: SAE, chunks: Sequence[Chunk], mean: torch.Tensor, step: int = 8192) -> tuple[float, int]:
    """(FVU, features active on at least one token) in one pass over the chunks."""
    err = tot = 0.0
    alive = torch.zeros(sae.d_sae, dtype=torch.bool)
    with torch.no_grad():
        for load in chunks:
            x = load()
            for s in range(0, len(x), step):
                xb = x[s:s + step]
                z = sae.encode(xb)
                err += float(((xb - sae.decode(z)) ** 2).sum())
                tot += float(((xb - mean) ** 2).sum())
                alive |= (z > 0).any(0)
    return err / max(tot, 1e-12), int(alive.sum())


def _batches(chunks: Sequence[Chunk], scale: float, batch: int, buffer: int, gen: torch.Generator
             ) -> Iterator[torch.Tensor]:
    """One epoch of scaled token batches: chunks in a seeded random order, tokens shuffled within the buffer."""
    order = torch.randperm(len(chunks), generator=gen).tolist() if len(chunks) > 1 else [0]
    held: list[torch.Tensor] = []
    n_held = 0
    for i, ci in enumerate(order):
        x = chunks[ci]()
        if len(x):
            held.append(x / scale)
            n_held += len(x)
        last = i == len(order) - 1
        if n_held < buffer and not last:
            continue
        pool = torch.cat(held) if len(held) > 1 else held[0] if held else None
        held, n_held = [], 0
        if pool is None:
            continue
        pool = pool[torch.randperm(len(pool), generator=gen)]
        full = len(pool) if last else len(pool) - len(pool) % batch
        for s in range(0, full, batch):
            yield pool[s:s + batch]
        if full < len(pool):  # the tail waits for the next buffer, so every batch but an epoch's last is full
            held, n_held = [pool[full:].clone()], len(pool) - full  # a copy: a view would pin the pool


def train_topk_sae(x: torch.Tensor | Sequence[Chunk], cfg: TopKConfig, device: str = "cpu",
                   buffer_tokens: int = SHUFFLE_TOKENS) -> tuple[SAE, dict]:
    """Fit a TopK SAE to ``x``: a tensor [n_tokens, d], or chunk loaders called once per pass (see the module
    docstring); returns (SAE with raw-scale weights, training stats)."""
    chunks = _as_chunks(x)
    gen = torch.Generator().manual_seed(cfg.seed)
    n, mean_norm, mean = _moments(chunks)
    d = mean.shape[0]
    scale = mean_norm / math.sqrt(d)
    W_dec = torch.randn(cfg.d_sae, d, generator=gen)
    W_dec = (W_dec / W_dec.norm(dim=1, keepdim=True)).to(device).requires_grad_()
    W_enc = W_dec.detach().T.clone().requires_grad_()
    b_enc = torch.zeros(cfg.d_sae, device=device, requires_grad=True)
    b_dec = (mean / scale).float().to(device).requires_grad_()
    params = [W_enc, b_enc, W_dec, b_dec]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    losses = []
    for _ in range(cfg.epochs):
        for xb in _batches(chunks, scale, cfg.batch_tokens, max(buffer_tokens, cfg.batch_tokens), gen):
            xb = xb.to(device)
            pre = (xb - b_dec) @ W_enc + b_enc
            top = pre.topk(cfg.k, dim=-1)
            z = torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values))
            loss = ((z @ W_dec + b_dec - xb) ** 2).sum(-1).mean()
            opt.zero_grad()
            loss.backward()
            with torch.no_grad():
                W_dec.grad -= (W_dec.grad * W_dec).sum(1, keepdim=True) * W_dec
            opt.step()
            with torch.no_grad():
                W_dec /= W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8)
            losses.append(float(loss.detach()))
    sae = SAE(W_enc.detach().cpu() / scale, b_enc.detach().cpu(), W_dec.detach().cpu() * scale,
              b_dec.detach().cpu() * scale, "topk", None, cfg.k, True)
    fvu, alive = _evaluate(sae, chunks, mean.float())
    return sae, {"fvu": fvu, "alive_features": alive, "steps": len(losses), "final_loss": losses[-1] if losses else None,
                 "input_scale": scale, "n_tokens": n}

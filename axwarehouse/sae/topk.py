"""Train a TopK SAE (Gao et al. 2024) on cached residual-stream vectors: the offline stand-in for GemmaScope.

z = TopK(ReLU((x − b_dec) W_enc + b_enc)), x̂ = z W_dec + b_dec, loss = mean squared error. Inputs are scaled by one
scalar so the mean vector norm is √d (learning rates then transfer across models); the scale is folded back into
the saved weights, so the file encodes raw activations. Decoder rows are kept at unit norm (gradient component along
each row removed before the step, rows renormalised after), W_enc starts as W_decᵀ and b_dec at the data mean.

Streaming: the tokens come as chunks (one concept's partition, the shared negatives) that are loaded on demand, so
memory holds one preallocated shuffle buffer of ``SHUFFLE_TOKENS`` tokens plus one chunk, never the whole split. One
pass computes the input scale and the mean (float64 sums), each epoch visits the chunks in a seeded random order
and shuffles tokens within the buffer (tokens left over after the last full batch carry into the next fill), and a
last pass measures FVU and live features. A tensor already in memory is one chunk shuffled whole: each epoch is a
permutation of every token, as before streaming. The buffer size is a constant, not a config field: like
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
        part = x.sum(0, dtype=torch.float64)
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


def _batches(chunks: Sequence[Chunk], scale: float, batch: int, capacity: int, gen: torch.Generator
             ) -> Iterator[torch.Tensor]:
    """One epoch of scaled token batches: chunks in a seeded random order, copied into one preallocated buffer of
    ``capacity`` tokens (a chunk that does not fit continues in the next fill), each full buffer shuffled and served
    in batches by index. Tokens left after the last full batch move to the front of the next fill, so every batch
    but an epoch's last is full. Memory: the buffer, one chunk and one batch."""
    order = torch.randperm(len(chunks), generator=gen).tolist() if len(chunks) > 1 else [0]
    pool: torch.Tensor | None = None
    filled = 0

    def drain(final: bool) -> Iterator[torch.Tensor]:
        nonlocal filled
        perm = torch.randperm(filled, generator=gen)
        full = filled if final else filled - filled % batch
        for s in range(0, full, batch):
            yield pool[perm[s:s + batch]]  # a copy: the buffer is refilled afterwards
        tail = pool[perm[full:filled]]
        pool[:len(tail)] = tail
        filled = len(tail)

    for ci in order:
        x = chunks[ci]()
        start = 0
        while start < len(x):
            if pool is None:
                pool = torch.empty(capacity, x.shape[1], dtype=torch.float32)
            if filled == capacity:  # drained only when more tokens need the room: a last fill is drained whole
                yield from drain(final=False)
            take = min(len(x) - start, capacity - filled)
            pool[filled:filled + take] = x[start:start + take] / scale
            filled += take
            start += take
    if filled:
        yield from drain(final=True)


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
    # a tensor already in memory is shuffled whole, as before streaming; chunks through the bounded buffer
    buffer = max(buffer_tokens, cfg.batch_tokens, n if isinstance(x, torch.Tensor) else 0)
    for _ in range(cfg.epochs):
        for xb in _batches(chunks, scale, cfg.batch_tokens, min(buffer, n), gen):
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

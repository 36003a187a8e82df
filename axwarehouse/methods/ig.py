"""IG (integrated gradients; docs/axbench-recipes.md §2.4): baseline b = mean input embedding of 1000 random token ids (seeded),
broadcast to every position; ``steps`` points α = k/steps (k = 0..steps−1, left Riemann); block L's output replaced by
b + α(h − b); s_t = Σ_d |(h − b)_{t,d} · mean_α ∂p/∂x_{t,d}|. Same classifier head as IxG. Detection only.

``steps`` = 50 as AxBench; each step is a forward + backward through the blocks above L, so on CPU a smaller value
(``--set ig.steps=8``) trades Riemann error for time (it is part of the config hash).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from axwarehouse.methods.attribution import HeadAttribution, integrated_gradients
from axwarehouse.methods.base import Artifact, ConceptData, Method
from axwarehouse.methods.registry import register


def embedding_baseline(lm, n_tokens: int, seed: int) -> torch.Tensor:
    """Mean input embedding [d] of ``n_tokens`` random token ids."""
    emb = lm.model.get_input_embeddings().weight
    ids = torch.randint(0, emb.shape[0], (n_tokens,), generator=torch.Generator().manual_seed(seed))
    return emb[ids.to(emb.device)].detach().float().mean(0)


@register("ig")
class IG(HeadAttribution, Method):
    @dataclass(frozen=True)
    class Config:
        lr: float = 4e-4
        weight_decay: float = 2e-4
        epochs: int = 24
        batch_size: int = 18
        grad_accum: int = 2
        steps: int = 50
        baseline_tokens: int = 1000

    def fit(self, data: ConceptData) -> Artifact:
        return self.fit_head(data)

    def attributions(self, ctx, head, ids, mask):
        b = embedding_baseline(ctx.lm, self.config.baseline_tokens, self.seed)
        return integrated_gradients(ctx.lm, head, ctx.layer, ids, mask, b, steps=self.config.steps)

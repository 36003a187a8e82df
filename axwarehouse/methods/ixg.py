"""IxG (input × gradient; docs/axbench-recipes.md §2.4): s_t = Σ_d |h_{t,d} · ∂p(positive)/∂h_{t,d}| at block L's output, where p comes
from a classifier head trained on the frozen model's final hidden state (see ``attribution.py``). Detection only."""

from __future__ import annotations

from dataclasses import dataclass

from axwarehouse.methods.attribution import HeadAttribution, grad_x_input
from axwarehouse.methods.base import Artifact, ConceptData, Method
from axwarehouse.methods.registry import register


@register("ixg")
class IxG(HeadAttribution, Method):
    @dataclass(frozen=True)
    class Config:
        lr: float = 4e-4
        weight_decay: float = 2e-4
        epochs: int = 24
        batch_size: int = 18
        grad_accum: int = 2

    def fit(self, data: ConceptData) -> Artifact:
        return self.fit_head(data)

    def attributions(self, ctx, head, ids, mask):
        return grad_x_input(ctx.lm, head, ctx.layer, ids, mask)

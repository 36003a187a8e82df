"""DiffMean: w = mean(h | positive tokens) - mean(h | negative tokens), unit norm; s_t = h_t . w (docs/axbench-recipes.md §2.4).

Tokens are pooled across examples (long examples weigh more), positions after the chat prefix only.
"""

from __future__ import annotations

import torch

from axwarehouse.methods.base import Artifact, ConceptData, Method, unit
from axwarehouse.methods.registry import register


@register("diffmean")
class DiffMean(Method):
    def fit(self, data: ConceptData) -> Artifact:
        rows = data.scored_rows()
        h = data.tokens.acts[torch.from_numpy(rows)]
        pos = torch.from_numpy(data.token_labels[rows] == 1)
        w = unit(h[pos].mean(0) - h[~pos].mean(0))
        return Artifact(w.numpy(), 0.0, float((h[pos] @ w).max()))

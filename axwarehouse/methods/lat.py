"""LAT (linear artificial tomography): positive tokens shuffled, first half paired with second half, each
difference L2-normalised (zero rows stay zero), first component of PCA(2) on the differences (docs/axbench-recipes.md §2.4).

AxBench shuffles with NumPy's global RNG; we use a seeded Generator so results are reproducible.
"""

from __future__ import annotations

import numpy as np

from axwarehouse.methods.base import Artifact, ConceptData, Method
from axwarehouse.methods.pca import first_component
from axwarehouse.methods.registry import register


@register("lat")
class LAT(Method):
    def fit(self, data: ConceptData) -> Artifact:
        rows = data.scored_rows()
        h = data.tokens.acts[rows].numpy()
        pos = h[data.token_labels[rows] == 1]
        shuffled = pos[np.random.default_rng(self.seed).permutation(len(pos))]
        half = len(shuffled) // 2
        diffs = shuffled[:half] - shuffled[half: 2 * half]
        norms = np.linalg.norm(diffs, axis=1, keepdims=True)
        diffs = np.divide(diffs, norms, out=np.zeros_like(diffs), where=norms > 0)
        w = first_component(diffs, self.seed)
        return Artifact(w, 0.0, float((pos @ w).max()))

"""PCA: first principal component (sklearn PCA(2), mean-centred) of the positive examples' tokens (docs/axbench-recipes.md §2.4).

The sign of a principal component is arbitrary, as in AxBench (docs/axbench-recipes.md §7.4): AUROC can fall below 0.5.
"""

from __future__ import annotations

import numpy as np

from axwarehouse.methods.base import Artifact, ConceptData, Method
from axwarehouse.methods.registry import register


def first_component(x: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.decomposition import PCA as SkPCA  # here, not at import: `axw status` lists methods without it

    w = SkPCA(n_components=2, random_state=seed).fit(x).components_[0]
    return (w / max(np.linalg.norm(w), np.finfo(np.float32).eps)).astype(np.float32)


@register("pca")
class PCA(Method):
    def fit(self, data: ConceptData) -> Artifact:
        rows = data.scored_rows()
        h = data.tokens.acts[rows].numpy()
        pos = h[data.token_labels[rows] == 1]
        w = first_component(pos, self.seed)
        return Artifact(w, 0.0, float((pos @ w).max()))

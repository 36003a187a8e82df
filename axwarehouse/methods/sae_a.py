"""SAE-A (AxBench's ``GemmaScopeSAEMaxAUC``): the SAE feature with the best AUROC on the training data (docs/axbench-recipes.md §2.4).

Encode the concept's binarized training texts with the whole SAE, take each example's max over scored tokens
(positions ≥ P) for every feature, compute every feature's AUROC (positives vs negatives) and keep the best
(ties → lowest index). Then it scores like SAE with that feature. Default SAE: ours (``axw sae train``), shown as
such in the artifact's ``extra.sae``; ``--set sae-a.sae=DIR`` uses a SAELens/GemmaScope SAE instead.
"""

from __future__ import annotations

import numpy as np
import torch

from axwarehouse.methods.base import Artifact, ConceptData
from axwarehouse.methods.registry import register
from axwarehouse.methods.sae import SAEFeatureMethod
from axwarehouse.sae.layout import auroc_columns, example_max


@register("sae-a")
class SAEA(SAEFeatureMethod):
    def fit(self, data: ConceptData) -> Artifact:
        sae, stored = self._sae_for(data.ctx, data.tokens.acts.shape[1])
        rows = np.flatnonzero(~data.tokens.is_prefix)
        maxes = example_max(sae, data.tokens.acts[torch.from_numpy(rows)], data.tokens.token_example[rows],
                            data.tokens.n_examples)
        auc = auroc_columns(maxes, data.labels)
        best = int(torch.argmax(auc))  # first maximum: ties go to the lowest feature index, as np.argmax
        max_act = float(maxes[torch.from_numpy(data.labels == 1), best].max())
        return self.artifact(sae, best, stored, max_act, train_auroc=float(auc[best]))

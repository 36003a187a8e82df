"""Probe: per-token logistic regression on the example label, w kept on the unit sphere (docs/axbench-recipes.md §2.3, §2.4).

Loss = BCE(sigmoid(h_t . w), y_example) averaged over real tokens at positions >= 1 (AxBench's probe loader
skips only BOS, so chat-prefix tokens are trained too). The logit has no bias: AxBench's ProbeIntervention computes
the latent as a plain dot product, so its nn.Linear bias never receives a gradient and stays at its init. After backward, w is renormalised to unit length and the
gradient component parallel to w removed, then AdamW steps; one step per batch, linear decay to 0, no warmup.
s_t = h_t . w: the bias is neither stored (the artifact's bias is 0) nor added when scoring, so the steering
magnitude (max train activation) and the latent scores are AxBench's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from axwarehouse.methods.base import Artifact, ConceptData, Method
from axwarehouse.methods.registry import register


@register("probe")
class Probe(Method):
    @dataclass(frozen=True)
    class Config:
        lr: float = 5e-3
        weight_decay: float = 1e-3
        epochs: int = 24
        batch_size: int = 12
        start_position: int = 1

    def fit(self, data: ConceptData) -> Artifact:
        cfg = self.config
        gen = torch.Generator().manual_seed(self.seed)
        torch.manual_seed(self.seed)
        d = data.tokens.acts.shape[1]
        linear = torch.nn.Linear(d, 1)  # default init, as AxBench
        opt = torch.optim.AdamW(linear.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        n = data.tokens.n_examples
        n_batches = (n + cfg.batch_size - 1) // cfg.batch_size
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1 - step / (cfg.epochs * n_batches))
        keep = data.tokens.positions >= cfg.start_position
        offsets = data.tokens.offsets
        labels = torch.from_numpy(data.labels.astype(np.float32))
        # per-example row ranges of trained tokens, so a batch is one index gather
        rows_of = [np.arange(offsets[i], offsets[i + 1])[keep[offsets[i]: offsets[i + 1]]] for i in range(n)]
        for _ in range(cfg.epochs):
            for batch in torch.randperm(n, generator=gen).split(cfg.batch_size):
                rows = np.concatenate([rows_of[i] for i in batch.tolist()])
                y = torch.repeat_interleave(labels[batch], torch.tensor([len(rows_of[i]) for i in batch.tolist()]))
                logits = data.tokens.acts[torch.from_numpy(rows)] @ linear.weight[0]
                loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y)
                opt.zero_grad()
                loss.backward()
                with torch.no_grad():
                    w = linear.weight
                    w /= w.norm().clamp_min(torch.finfo(w.dtype).eps)
                    w.grad -= (w.grad * w).sum() * w
                opt.step()
                sched.step()
        w = linear.weight.detach()[0]
        w = w / w.norm().clamp_min(torch.finfo(w.dtype).eps)
        pos_rows = np.flatnonzero(data.token_labels == 1)
        # bias 0.0: AxBench's ProbeIntervention scores h.w, its nn.Linear bias is never used (nor stored here)
        return Artifact(w.numpy(), 0.0, float((data.tokens.acts[torch.from_numpy(pos_rows)] @ w).max()),
                        extra={"final_loss": float(loss.detach())})

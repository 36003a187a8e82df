"""SSV (supervised steering vector, AxBench's ``SteeringVector``; docs/axbench-recipes.md §2.4).

v ∈ R^d starts at 0.01 everywhere; training adds v to block L's output at every position ≥ P; loss = next-token CE
on the positives' responses; no normalisation and no clipping, one AdamW step per batch. Detection:
s_t = ReLU(h_t · v); steering adds f·a_c·v with v *not* unit norm (docs/axbench-recipes.md §7.5), so the stored direction is raw v.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from axwarehouse.methods.base import Artifact, ConceptData, Method
from axwarehouse.methods.lm_objective import LMBatch, concept_lm_examples, max_relu_activation, train_edit
from axwarehouse.methods.registry import register


@register("ssv")
class SSV(Method):
    nonlinearity = "relu"
    needs = frozenset({"activations", "model"})

    @dataclass(frozen=True)
    class Config:
        lr: float = 1e-2
        weight_decay: float = 0.0
        epochs: int = 3
        batch_size: int = 6

    def fit(self, data: ConceptData) -> Artifact:
        cfg, ctx = self.config, data.ctx
        lm, chat = ctx.lm, ctx.chat
        examples = concept_lm_examples(chat, data)
        torch.manual_seed(self.seed)
        v = torch.nn.Parameter(torch.full((lm.hidden_size,), 0.01, device=ctx.device))

        def edit(h: torch.Tensor, batch: LMBatch, state: dict) -> torch.Tensor:
            return h + batch.edit_mask.unsqueeze(-1) * v.to(h.dtype)

        loss = train_edit(lm, ctx.layer, examples, chat.prefix_len, [v], edit, lr=cfg.lr,
                          weight_decay=cfg.weight_decay, epochs=cfg.epochs, batch_size=cfg.batch_size, seed=self.seed,
                          device=ctx.device)
        vec = v.detach().cpu()
        return Artifact(vec.numpy(), 0.0, max_relu_activation(data, vec),
                        extra={"final_loss": loss, "norm": float(vec.norm()), "n_train": len(examples)})

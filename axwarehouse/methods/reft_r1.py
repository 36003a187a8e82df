"""ReFT-r1 (AxBench's ``LsReFT``): a rank-1 top-k ReLU encoder trained with the steering (LM) objective (docs/axbench-recipes.md §2.4).

w ∈ R^d starts at 0.01 everywhere. At the intervened positions T (real tokens at positions ≥ P) of block L:
z_t = ReLU(h_t · w); m = mean of the top-k z_t; every t ∈ T is edited to h_t + m·w. Loss = next-token CE on the
response + λ·L1, L1 = batch mean of (Σ non-top-k z_t / |T|), λ ramping linearly from 0 to ``l1_coeff``. Trained on
positives and the genre's negatives (own-model answers teach z to stay near 0 off-concept). Per step: clip the
gradient norm to 1, renormalise w to unit length, drop the gradient component parallel to w, AdamW step.

Detection: s_t = ReLU(h_t · w) (one matmul over cached activations). Steering: add f·a_c·w (the plain rule).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from axwarehouse.methods.base import Artifact, ConceptData, Method, unit
from axwarehouse.methods.lm_objective import LMBatch, concept_lm_examples, max_relu_activation, train_edit
from axwarehouse.methods.registry import register


def topk_edit(h: torch.Tensor, w: torch.Tensor, mask: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(edited h, per-example L1 of the non-top-k latents) of the ReFT-r1 training edit on positions ``mask``.

    ``w`` is one direction [d] for the whole batch or one per example [B, d] (the dictionary row of each example's
    concept in ``reft-r1-joint``, AxBench's ``subspaces``). Both go through the same batched matmul, so a batch
    direction and its per-example copies give bit-identical edits.
    """
    w = w.expand(h.shape[0], -1) if w.dim() == 1 else w  # [B, d]
    z = torch.relu(torch.bmm(h, w.unsqueeze(-1)).squeeze(-1)) * mask  # [B, T]; masked positions contribute 0
    k = min(k, z.shape[1])
    top, idx = z.topk(k, dim=1)
    m = top.mean(1)  # [B]
    rest = z.scatter(1, idx, 0.0)
    l1 = rest.sum(1) / mask.sum(1).clamp_min(1)
    return h + mask.unsqueeze(-1) * m[:, None, None] * w[:, None, :], l1


def unit_norm_step(w: torch.nn.Parameter) -> None:
    """AxBench's rule before each optimizer step, for one direction [d] or a dictionary [n, d] row by row: clip the
    gradient norm (of the whole parameter) to 1, renormalise every row to unit length, drop each row's gradient
    component parallel to the row."""
    torch.nn.utils.clip_grad_norm_([w], 1.0)
    with torch.no_grad():
        w.div_(w.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(w.dtype).eps))
        w.grad.sub_((w.grad * w).sum(-1, keepdim=True) * w)


@register("reft-r1")
class ReFTr1(Method):
    nonlinearity = "relu"
    needs = frozenset({"activations", "model"})

    @dataclass(frozen=True)
    class Config:
        lr: float = 1e-2
        weight_decay: float = 0.0
        epochs: int = 3
        batch_size: int = 6
        topk: int = 8
        l1_coeff: float = 5e-3
        train_on_negative: bool = True

    def fit(self, data: ConceptData) -> Artifact:
        cfg, ctx = self.config, data.ctx
        lm, chat = ctx.lm, ctx.chat
        examples = concept_lm_examples(chat, data, cfg.train_on_negative)
        torch.manual_seed(self.seed)
        w = torch.nn.Parameter(torch.full((lm.hidden_size,), 0.01, device=ctx.device))

        def edit(h: torch.Tensor, batch: LMBatch, state: dict) -> torch.Tensor:
            new, state["l1"] = topk_edit(h, w.to(h.dtype), batch.edit_mask, cfg.topk)
            return new

        loss = train_edit(lm, ctx.layer, examples, chat.prefix_len, [w], edit, lr=cfg.lr,
                          weight_decay=cfg.weight_decay, epochs=cfg.epochs, batch_size=cfg.batch_size, seed=self.seed,
                          device=ctx.device, aux_loss=lambda st, progress: cfg.l1_coeff * progress * st["l1"].mean(),
                          before_step=lambda: unit_norm_step(w))
        direction = unit(w.detach().cpu())  # AxBench renormalises before each step, so the last row is ~unit
        return Artifact(direction.numpy(), 0.0, max_relu_activation(data, direction),
                        extra={"final_loss": loss, "n_train": len(examples)})

"""ReFT-r1, joint dictionary form: one encoder W ∈ R^{n×d} with a row per concept of the set, trained together.

Same objective, edit and per-step rule as ``reft-r1`` (docs/axbench-recipes.md §2.4), but one AdamW run over every concept: each training
example is the (example, concept) pair of a concept's own ReFT-r1 training set (its positives and, with
``train_on_negative``, its genre's shared negatives, so a negative appears once per concept of its genre) and is
edited with its concept's row W[c] (AxBench's pyvene ``subspaces`` = concept id). Batches mix concepts; the L1 term
is the batch mean of each example's own-row non-top-k latents; per step the gradient norm of the whole dictionary is
clipped to 1, then every row is renormalised to unit length and loses its parallel gradient component (AxBench's
``set_decoder_norm_to_unit_norm`` / ``remove_gradient_parallel_to_decoder_directions`` work row-wise). All rows start
at 0.01 everywhere.

Upstream AxBench stores ReFT-r1 as this [n, d] dictionary (row = concept id, selected per example at inference) but
fills it by training each row alone; sharing the optimiser steps is this method's addition. With one concept it is
``reft-r1`` (same examples, batches and edit).

Artifacts: one row per concept, direction = its unit row, so detection is the usual single matmul
(s_t = ReLU(h_t · W[c])) and steering the plain rank-1 addition.
"""

from __future__ import annotations

import torch

from axwarehouse.errors import AxwError
from axwarehouse.methods.base import Artifact, ConceptData, Method, unit
from axwarehouse.methods.lm_objective import LMBatch, concept_lm_examples, max_relu_activation, train_edit
from axwarehouse.methods.reft_r1 import ReFTr1, topk_edit, unit_norm_step
from axwarehouse.methods.registry import register


@register("reft-r1-joint")
class ReFTr1Joint(Method):
    nonlinearity = "relu"
    needs = frozenset({"activations", "model"})
    joint = True
    Config = ReFTr1.Config  # same hyperparameters and defaults as reft-r1

    @classmethod
    def source_hash(cls) -> str:
        """This file and reft_r1.py (the edit and the per-step rule) define the result: `axw status` watches both."""
        import hashlib
        import inspect

        from axwarehouse.methods import reft_r1

        src = inspect.getsource(inspect.getmodule(cls)) + inspect.getsource(reft_r1)
        return hashlib.sha256(src.encode()).hexdigest()[:12]

    def fit(self, data: ConceptData) -> Artifact:
        """A dictionary of one row (= reft-r1 on this concept)."""
        return self.fit_all({data.concept_id: data})[data.concept_id]

    def fit_all(self, datas: dict[int, ConceptData]) -> dict[int, Artifact]:
        if not datas:
            raise AxwError(f"{self.name}: no concepts to train")
        cfg = self.config
        ctx = next(iter(datas.values())).ctx
        lm, chat = ctx.lm, ctx.chat
        cids = sorted(datas)
        examples, rows, counts = [], [], {}
        for r, cid in enumerate(cids):
            data = datas[cid]
            ex = concept_lm_examples(chat, data, cfg.train_on_negative)
            examples += ex
            rows += [r] * len(ex)
            counts[cid] = len(ex)
        row_of = torch.tensor(rows, dtype=torch.long, device=ctx.device)  # example -> its concept's row
        torch.manual_seed(self.seed)
        W = torch.nn.Parameter(torch.full((len(cids), lm.hidden_size), 0.01, device=ctx.device))

        def edit(h: torch.Tensor, batch: LMBatch, state: dict) -> torch.Tensor:
            w = W.to(h.dtype)[row_of[batch.index.to(row_of.device)]]  # [B, d]: each example's own row
            new, state["l1"] = topk_edit(h, w, batch.edit_mask, cfg.topk)
            return new

        loss = train_edit(lm, ctx.layer, examples, chat.prefix_len, [W], edit, lr=cfg.lr,
                          weight_decay=cfg.weight_decay, epochs=cfg.epochs, batch_size=cfg.batch_size, seed=self.seed,
                          device=ctx.device, aux_loss=lambda st, progress: cfg.l1_coeff * progress * st["l1"].mean(),
                          before_step=lambda: unit_norm_step(W))
        out = {}
        for r, cid in enumerate(cids):
            direction = unit(W[r].detach().cpu())  # renormalised before each step, so the last rows are ~unit
            out[cid] = Artifact(direction.numpy(), 0.0, max_relu_activation(datas[cid], direction),
                                extra={"final_loss": loss, "n_train": counts[cid], "row": r,
                                       "joint_concepts": len(cids), "joint_n_train": len(examples)})
        return out

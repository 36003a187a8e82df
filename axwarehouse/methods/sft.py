"""SFT (AxBench's ``SFT``: full finetune; docs/axbench-recipes.md §2.3, §2.4). Steering only; the factor is ignored.

Every parameter of the target model is trained on the concept's positives with the output-token CE (LM-style data,
docs/axbench-recipes.md §2.2): AdamW lr 4e-5, batch 18, gradient accumulation 4, 8 epochs, linear decay to 0, grad-norm clip 1.0.
AxBench configures SFT for its first 20 concepts only (``max_concepts: 20``): ``max_concepts`` here limits training
and steering to the first N concepts of a set by concept_id (0 = all). The model stays in eval mode (AxBench calls
``train()``, which changes nothing for Llama/Gemma: their attention dropout is 0).

Storage: the finetuned model is ``base + Δ``; the artifact stores Δ = trained − base of the parameters that changed
(per tensor; shared/tied tensors once), as **bfloat16** safetensors (``weights_dtype``). Storing the difference
rather than the weights keeps the unchanged base exact and bounds the rounding error by 2⁻⁹·|Δ| per entry
(a tiny fraction of the update), where bfloat16 *weights* would move every weight by up to 2⁻⁹·|w|, far more than an
lr-4e-5 update; bfloat16 rather than float16 because float16's range underflows the many tiny Δ entries (below
6e-8). ``weights_dtype=float32`` stores Δ exactly. Steering adds Δ to the loaded model and restores the saved
originals afterwards (bit-exact). The training run leaves the shared model exactly as it found it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from axwarehouse.errors import AxwError
from axwarehouse.methods.base import Artifact, ConceptData, Context, Method
from axwarehouse.methods.lm_objective import concept_lm_examples, train_lm
from axwarehouse.methods.registry import register
from axwarehouse.weights import load_weights

DTYPES = ("bfloat16", "float16", "float32")  # torch dtype names (looked up on use: no torch at import)


def changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> list[str]:
    """Names of the tensors whose values differ between ``before`` and ``after``."""
    return [n for n, t in after.items() if not torch.equal(t, before[n])]


@contextmanager
def weight_deltas(model: torch.nn.Module, deltas: dict[str, torch.Tensor]) -> Iterator[None]:
    """Add ``deltas`` ({parameter name: Δ}) to the model's parameters; restore the saved originals on exit."""
    params = dict(model.named_parameters())
    unknown = [n for n in deltas if n not in params]
    if unknown:
        raise AxwError(f"sft weights name parameters this model does not have: {unknown[:3]}")
    saved = {n: params[n].detach().clone() for n in deltas}
    try:
        with torch.no_grad():
            for n, d in deltas.items():
                params[n].add_(d.to(device=params[n].device, dtype=params[n].dtype))
        yield
    finally:
        with torch.no_grad():
            for n, t in saved.items():
                params[n].copy_(t)


@register("sft")
class SFT(Method):
    evaluations = ("steering",)
    needs = frozenset({"activations", "model"})
    steering = "model"

    @dataclass(frozen=True)
    class Config:
        lr: float = 4e-5
        weight_decay: float = 0.0
        epochs: int = 8
        batch_size: int = 18
        grad_accum: int = 4
        clip_norm: float = 1.0
        max_concepts: int = 20  # AxBench trains SFT for its first 20 concepts; 0 = all
        weights_dtype: str = "bfloat16"  # of the stored Δ: bfloat16 | float16 | float32

    def fit(self, data: ConceptData) -> Artifact:
        cfg, ctx = self.config, data.ctx
        if cfg.weights_dtype not in DTYPES:
            raise AxwError(f"sft.weights_dtype must be one of {', '.join(DTYPES)}, got {cfg.weights_dtype!r}")
        lm, chat = ctx.lm, ctx.chat
        examples = concept_lm_examples(chat, data)
        named = dict(lm.model.named_parameters())  # tied tensors appear once
        original = {n: p.detach().clone() for n, p in named.items()}
        flags = {n: p.requires_grad for n, p in named.items()}
        torch.manual_seed(self.seed)
        try:
            for p in named.values():
                p.requires_grad_(True)
            loss = train_lm(lm, examples, chat.prefix_len, list(named.values()), None, lr=cfg.lr,
                            weight_decay=cfg.weight_decay, epochs=cfg.epochs, batch_size=cfg.batch_size,
                            seed=self.seed, device=ctx.device, grad_accum=cfg.grad_accum, clip_norm=cfg.clip_norm)
            trained = {n: p.detach() for n, p in named.items()}
            names = changed(original, trained)
            deltas = {n: (trained[n] - original[n]).to(getattr(torch, cfg.weights_dtype)).cpu() for n in names}
        finally:
            with torch.no_grad():
                for n, p in named.items():
                    p.copy_(original[n])
                    p.grad = None
                    p.requires_grad_(flags[n])
        return Artifact(None, extra={"final_loss": loss, "n_train": len(examples), "n_changed": len(names),
                                     "n_params": len(named), "weights": f"delta ({cfg.weights_dtype})"},
                        weights=deltas, weights_meta={"kind": "delta", "dtype": cfg.weights_dtype})

    def steering_edit(self, lm, artifact: Artifact, ctx: Context):
        tensors, _meta = load_weights(ctx.warehouse, artifact.weights_path)
        return weight_deltas(lm.model, tensors)

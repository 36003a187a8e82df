"""LoRA (AxBench's ``LoRA``: PEFT ``LoraConfig(r=4, lora_alpha=32, use_rslora=True, lora_dropout=0.05,
bias="none")`` on ``o_proj`` of layers 5, 10, 15, 20; docs/axbench-recipes.md §2.3, §2.4). Steering only; the factor is ignored.

At every listed layer, ``o_proj(x) = W x`` becomes ``W x + (α/√r) · B A dropout(x)`` (rank-stabilised scaling),
A ∈ R^{r×d_in} Kaiming-uniform (a = √5) and B ∈ R^{d_out×r} = 0 at the start (PEFT's init), so the untrained
adapter is the base model bit for bit. Trained on the concept's positives with the output-token CE (LM-style data,
docs/axbench-recipes.md §2.2): AdamW lr 9e-4, batch 18, gradient accumulation 2, 24 epochs, linear decay to 0, no clipping. Dropout
is active while training only: PEFT creates its dropout modules in training mode inside AxBench's eval-mode model,
and steering calls ``eval()``.

A model with fewer blocks keeps the listed layers it has (``--set lora.layers=...`` picks others); with none left
the method is unavailable for that model.

Why our own adapter instead of PEFT: ``pip install --dry-run peft`` would add only peft 0.21.2 (no other torch),
but LoRA here is two small matrices and one line of forward on four modules. A forward hook on ``o_proj`` leaves the
frozen shared model untouched (no module replacement to undo with ``unload()``), is installed and removed per
concept in microseconds while steering, works the same for every model family with an ``o_proj``, and needs no
compatibility promise between PEFT and transformers 5.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from axwarehouse.methods.base import Artifact, ConceptData, Context, Method
from axwarehouse.methods.lm_objective import LayerListMethod, concept_lm_examples, existing_layers, train_lm
from axwarehouse.methods.registry import register
from axwarehouse.weights import load_weights


@contextmanager
def lora_hooks(lm, adapters: dict[int, tuple[torch.Tensor, torch.Tensor]], module: str, scale: float,
               dropout: float = 0.0, training: bool = False) -> Iterator[None]:
    """Add ``scale · B A dropout(x)`` to the output of ``module`` (e.g. ``self_attn.o_proj``) of each block in
    ``adapters`` ({layer: (A [r, d_in], B [d_out, r])}) while the context is open."""
    handles = []
    blocks = lm.decoder_layers()
    for layer, (a, b) in adapters.items():
        def hook(_mod, inputs, output, a=a, b=b):
            x = inputs[0]
            if training and dropout > 0:
                x = torch.nn.functional.dropout(x, dropout, training=True)
            return output + scale * ((x @ a.T.to(x.dtype)) @ b.T.to(x.dtype))

        handles.append(blocks[layer].get_submodule(module).register_forward_hook(hook))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@register("lora")
class LoRA(LayerListMethod, Method):
    evaluations = ("steering",)
    needs = frozenset({"activations", "model"})
    steering = "model"

    @dataclass(frozen=True)
    class Config:
        rank: int = 4
        alpha: float = 32.0
        dropout: float = 0.05
        layers: str = "5,10,15,20"  # comma-separated; the ones the model has are used
        module: str = "self_attn.o_proj"
        lr: float = 9e-4
        weight_decay: float = 0.0
        epochs: int = 24
        batch_size: int = 18
        grad_accum: int = 2

    def fit(self, data: ConceptData) -> Artifact:
        cfg, ctx = self.config, data.ctx
        lm, chat = ctx.lm, ctx.chat
        layers = self.train_layers(lm.n_layers)
        examples = concept_lm_examples(chat, data)
        torch.manual_seed(self.seed)
        adapters: dict[int, tuple[torch.nn.Parameter, torch.nn.Parameter]] = {}
        for layer in layers:
            mod = lm.decoder_layers()[layer].get_submodule(cfg.module)
            a = torch.nn.Parameter(torch.empty(cfg.rank, mod.in_features, device=ctx.device))
            torch.nn.init.kaiming_uniform_(a, a=math.sqrt(5))
            b = torch.nn.Parameter(torch.zeros(mod.out_features, cfg.rank, device=ctx.device))
            adapters[layer] = (a, b)
        scale = cfg.alpha / math.sqrt(cfg.rank)
        params = [p for ab in adapters.values() for p in ab]
        loss = train_lm(lm, examples, chat.prefix_len, params,
                        lambda batch, state: lora_hooks(lm, adapters, cfg.module, scale, cfg.dropout, training=True),
                        lr=cfg.lr, weight_decay=cfg.weight_decay, epochs=cfg.epochs, batch_size=cfg.batch_size,
                        seed=self.seed, device=ctx.device, grad_accum=cfg.grad_accum, clip_norm=None)
        weights = {}
        for layer, (a, b) in adapters.items():
            weights[f"layers.{layer}.lora_A"] = a.detach().float().cpu()
            weights[f"layers.{layer}.lora_B"] = b.detach().float().cpu()
        meta = {"layers": json.dumps(layers), "module": cfg.module, "scale": repr(scale)}
        dropped = existing_layers(cfg.layers, lm.n_layers)[1]
        return Artifact(None, extra={"final_loss": loss, "n_train": len(examples), "layers": layers,
                                     "layers_dropped": dropped, "scale": scale},
                        weights=weights, weights_meta=meta)

    def steering_edit(self, lm, artifact: Artifact, ctx: Context):
        tensors, meta = load_weights(ctx.warehouse, artifact.weights_path)
        device = next(lm.model.parameters()).device
        adapters = {int(layer): (tensors[f"layers.{layer}.lora_A"].to(device),
                                 tensors[f"layers.{layer}.lora_B"].to(device))
                    for layer in json.loads(meta["layers"])}
        return lora_hooks(lm, adapters, meta["module"], float(meta["scale"]))

"""LoReFT (AxBench's ``LoReFT``: pyreft ``LoreftIntervention``, rank 4, at the block outputs of layers 5, 10, 15, 20,
positions "f5+l5"; docs/axbench-recipes.md §2.3, §2.4). Steering only; the factor is ignored.

At each listed layer and each intervened position: Φ(h) = h + Rᵀ(W h + b − R h), R ∈ R^{r×d} with orthonormal rows,
W ∈ R^{r×d}, b ∈ R^r (one (R, W, b) per layer, shared across positions). R is pyvene's ``LowRankRotateLayer``
(weight = Rᵀ, orthogonal init) under ``torch.nn.utils.parametrizations.orthogonal``, exactly how pyreft builds it,
so R stays orthonormal through training; W, b are an ``nn.Linear(d, r)``. pyvene 0.1.8 has the rotation layer but
not the LoReFT combination (that lives in pyreft, which is not installed), hence the one-line :func:`loreft` here.

Positions (pyreft ``get_intervention_locations`` with ``share_weights=True``): with n prompt tokens (the chat
rendering with generation prompt, counted from its first token: the chat prefix is included, as upstream counts
from position 0), f = min(n // 2, 5), l = min(n // 2, 5): positions 0..f−1 and n−l..n−1. Upstream pads a short
prompt's missing positions with a dummy location (the first response token in training, a pad token in
generation); we leave them out. Training edits those prompt positions and trains on the positives' response CE:
AdamW lr 9e-4, batch 18, gradient accumulation 2 (gradients summed over the two batches, not averaged: upstream
divides the loss only after ``backward``), 24 epochs, linear decay, grad-norm clip 1.0 (of the summed gradient).
Steering applies the same edit to the prompt forward only: generated tokens are not edited, they see the edited
prompt through the KV cache (pyvene's ``generate`` with ``unit_locations`` and ``intervene_on_prompt=True`` calls
the intervention on the prompt pass only).

The upstream intervention keeps W, b in bfloat16 (pyreft's default dtype); we train everything in the model's
dtype (float32 here). A model with fewer blocks keeps the listed layers it has (``--set loreft.layers=...``).
"""

from __future__ import annotations

import functools

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from axwarehouse.methods.base import Artifact, ConceptData, Context, Method
from axwarehouse.methods.lm_objective import LayerListMethod, concept_lm_examples, existing_layers, train_lm
from axwarehouse.methods.registry import register
from axwarehouse.weights import load_weights


def loreft(h: torch.Tensor, r: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Φ(h) = h + Rᵀ(W h + b − R h) over the last dimension; R, W [r, d], b [r]."""
    return h + (h @ w.T + b - h @ r.T) @ r


def f_l_positions(attention_mask: torch.Tensor, prompt_len: torch.Tensor, first: int, last: int) -> torch.Tensor:
    """[B, T] bool: the first min(n//2, first) and last min(n//2, last) of each row's n = prompt_len prompt tokens.

    Rows may be left- or right-padded: a row's tokens are its attention_mask = 1 positions, in order, and its prompt
    is the first prompt_len of them."""
    real = attention_mask.bool()
    rank = real.long().cumsum(1) - 1  # index of a token among its row's real tokens
    n = prompt_len.to(rank.device).long()[:, None]
    f = torch.clamp(n // 2, max=first)
    k = torch.clamp(n // 2, max=last)
    return real & (rank < n) & ((rank < f) | (rank >= n - k))


@functools.lru_cache(maxsize=1)
def layer_class() -> type:
    """The LoReFT layer module class, defined on first use so that importing this file does not import torch
    (commands that only read the catalog, like `axw status`, list methods without loading torch)."""

    class LoReFTLayer(torch.nn.Module):
        """(R, W, b) of one layer; R = rotate_layer.weight.T kept orthonormal by the parametrization."""

        def __init__(self, d: int, r: int):
            super().__init__()
            from axwarehouse.steering.intervention import _pyvene

            _pyvene()  # silences pyvene's import-time print
            from pyvene.models.layers import LowRankRotateLayer

            rotate = LowRankRotateLayer(d, r, init_orth=True)
            self.rotate_layer = torch.nn.utils.parametrizations.orthogonal(rotate)
            self.learned_source = torch.nn.Linear(d, r)

        def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            return self.rotate_layer.weight.T, self.learned_source.weight, self.learned_source.bias

    return LoReFTLayer


@contextmanager
def loreft_hooks(lm, layers: dict[int, object], positions: dict) -> Iterator[None]:
    """Edit the output of each block in ``layers`` ({layer: LoReFTLayer or (R, W, b)}) with Φ at the positions
    ``positions["mask"]`` ([B, T] bool, or None = no edit in this forward) while the context is open."""
    blocks = lm.decoder_layers()
    handles = []
    for layer, params in layers.items():
        def fn(h, params=params):
            mask = positions.get("mask")
            if mask is None or mask.shape != h.shape[:2]:
                return h
            r, w, b = params.tensors() if isinstance(params, layer_class()) else params
            return torch.where(mask[..., None], loreft(h, r.to(h.dtype), w.to(h.dtype), b.to(h.dtype)), h)

        def hook(_mod, _inputs, output, fn=fn):
            if isinstance(output, tuple):
                return (fn(output[0]),) + tuple(output[1:])
            return fn(output)

        handles.append(blocks[layer].register_forward_hook(hook))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def prompt_positions(lm, first: int, last: int, positions: dict) -> Iterator[None]:
    """Set ``positions["mask"]`` before every forward of ``lm.model``: f+l positions on a full-prompt pass (no
    cached prefix: input length = attention-mask length; every real token is prompt), None on cached decoding
    steps, so ``generate`` edits the prompt only."""
    def pre(_mod, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        mask = kwargs.get("attention_mask")
        if ids is None:
            positions["mask"] = None
            return
        if mask is None:
            mask = torch.ones_like(ids)
        positions["mask"] = f_l_positions(mask, mask.sum(1), first, last) if ids.shape[1] == mask.shape[1] else None

    handle = lm.model.register_forward_pre_hook(pre, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()
        positions["mask"] = None


@register("loreft")
class LoReFT(LayerListMethod, Method):
    evaluations = ("steering",)
    needs = frozenset({"activations", "model"})
    steering = "model"

    @dataclass(frozen=True)
    class Config:
        rank: int = 4
        layers: str = "5,10,15,20"  # comma-separated; the ones the model has are used
        first: int = 5  # "f5"
        last: int = 5  # "l5"
        lr: float = 9e-4
        weight_decay: float = 0.0
        epochs: int = 24
        batch_size: int = 18
        grad_accum: int = 2
        clip_norm: float = 1.0

    def fit(self, data: ConceptData) -> Artifact:
        cfg, ctx = self.config, data.ctx
        lm, chat = ctx.lm, ctx.chat
        layers = self.train_layers(lm.n_layers)
        examples = concept_lm_examples(chat, data)
        torch.manual_seed(self.seed)
        modules = {layer: layer_class()(lm.hidden_size, cfg.rank).to(ctx.device) for layer in layers}
        params = [p for m in modules.values() for p in m.parameters()]
        positions: dict = {}

        @contextmanager
        def around(batch, _state):
            positions["mask"] = f_l_positions(batch.attention_mask, batch.prompt_len, cfg.first, cfg.last)
            with loreft_hooks(lm, modules, positions):
                yield

        loss = train_lm(lm, examples, chat.prefix_len, params, around, lr=cfg.lr, weight_decay=cfg.weight_decay,
                        epochs=cfg.epochs, batch_size=cfg.batch_size, seed=self.seed, device=ctx.device,
                        grad_accum=cfg.grad_accum, clip_norm=cfg.clip_norm,
                        accum_mean=False)  # upstream divides by GA after backward: accumulated gradients are summed
        weights = {}
        with torch.no_grad():
            for layer, m in modules.items():
                r, w, b = m.tensors()
                weights[f"layers.{layer}.R"] = r.float().cpu().contiguous()
                weights[f"layers.{layer}.W"] = w.float().cpu().contiguous()
                weights[f"layers.{layer}.b"] = b.float().cpu().contiguous()
        meta = {"layers": json.dumps(layers), "first": str(cfg.first), "last": str(cfg.last)}
        return Artifact(None, extra={"final_loss": loss, "n_train": len(examples), "layers": layers,
                                     "layers_dropped": existing_layers(cfg.layers, lm.n_layers)[1]},
                        weights=weights, weights_meta=meta)

    @contextmanager
    def steering_edit(self, lm, artifact: Artifact, ctx: Context):
        tensors, meta = load_weights(ctx.warehouse, artifact.weights_path)
        device = next(lm.model.parameters()).device
        layers = {int(layer): tuple(tensors[f"layers.{layer}.{k}"].to(device) for k in ("R", "W", "b"))
                  for layer in json.loads(meta["layers"])}
        positions: dict = {}
        with prompt_positions(lm, int(meta["first"]), int(meta["last"]), positions), \
                loreft_hooks(lm, layers, positions):
            yield

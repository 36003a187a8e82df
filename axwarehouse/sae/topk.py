"""Train a TopK SAE (Gao et al. 2024) on cached residual-stream vectors: the offline stand-in for GemmaScope.

z = TopK(ReLU((x − b_dec) W_enc + b_enc)), x̂ = z W_dec + b_dec, loss = mean squared error. Inputs are scaled by one
scalar so the mean vector norm is √d (learning rates then transfer across models); the scale is folded back into
the saved weights, so the file encodes raw activations. Decoder rows are kept at unit norm (gradient component along
each row removed before the step, rows renormalised after), W_enc starts as W_decᵀ and b_dec at the data mean.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from axwarehouse.sae.layout import SAE


@dataclass(frozen=True)
class TopKConfig:
    d_sae: int = 4096
    k: int = 32
    epochs: int = 3
    batch_tokens: int = 4096
    lr: float = 1e-3
    seed: int = 42


def fraction_of_variance_unexplained(sae: SAE, x: torch.Tensor, chunk: int = 8192) -> float:
    """Σ‖x − x̂‖² / Σ‖x − mean(x)‖² over ``x`` (1 − R²)."""
    err = tot = 0.0
    mean = x.mean(0)
    for s in range(0, len(x), chunk):
        xb = x[s:s + chunk]
        err += float(((xb - sae.decode(sae.encode(xb))) ** 2).sum())
        tot += float(((xb - mean) ** 2).sum())
    return err / max(tot, 1e-12)


def train_topk_sae(x: torch.Tensor, cfg: TopKConfig, device: str = "cpu") -> tuple[SAE, dict]:
    """Fit a TopK SAE to ``x`` [n_tokens, d]; returns (SAE with raw-scale weights, training stats)."""
    gen = torch.Generator().manual_seed(cfg.seed)
    n, d = x.shape
    scale = float(x.norm(dim=1).mean()) / math.sqrt(d)
    xs = (x / scale).to(device)
    W_dec = torch.randn(cfg.d_sae, d, generator=gen)
    W_dec = (W_dec / W_dec.norm(dim=1, keepdim=True)).to(device).requires_grad_()
    W_enc = W_dec.detach().T.clone().requires_grad_()
    b_enc = torch.zeros(cfg.d_sae, device=device, requires_grad=True)
    b_dec = xs.mean(0).clone().requires_grad_()
    params = [W_enc, b_enc, W_dec, b_dec]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    losses = []
    for _ in range(cfg.epochs):
        for idx in torch.randperm(n, generator=gen).split(cfg.batch_tokens):
            xb = xs[idx.to(device)]
            pre = (xb - b_dec) @ W_enc + b_enc
            top = pre.topk(cfg.k, dim=-1)
            z = torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values))
            loss = ((z @ W_dec + b_dec - xb) ** 2).sum(-1).mean()
            opt.zero_grad()
            loss.backward()
            with torch.no_grad():
                W_dec.grad -= (W_dec.grad * W_dec).sum(1, keepdim=True) * W_dec
            opt.step()
            with torch.no_grad():
                W_dec /= W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8)
            losses.append(float(loss.detach()))
    sae = SAE(W_enc.detach().cpu() / scale, b_enc.detach().cpu(), W_dec.detach().cpu() * scale,
              b_dec.detach().cpu() * scale, "topk", None, cfg.k, True)
    with torch.no_grad():
        fvu = fraction_of_variance_unexplained(sae, x)
        alive = int((torch.cat([(sae.encode(x[s:s + 8192]) > 0).any(0, keepdim=True)
                                for s in range(0, len(x), 8192)]).any(0)).sum())
    return sae, {"fvu": fvu, "alive_features": alive, "steps": len(losses), "final_loss": losses[-1] if losses else None,
                 "input_scale": scale}

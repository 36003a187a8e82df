"""Negative log-likelihood of chosen tokens of a batch, with the model's output head run only where it is needed.

One mechanism for the two places that score some of a sequence's tokens: training's response loss
(:mod:`axwarehouse.methods.lm_objective`) and the perplexity of generations (:mod:`axwarehouse.judging.conditional_perplexity`).
Only the positions that predict a scored token reach the output head (transformers' ``logits_to_keep`` with a
boolean mask, so a head-side step such as Gemma's logit soft-capping still applies): the other positions'
vocabulary-sized logits — prompts, padding — were most of the work and memory otherwise (256k per token on Gemma).
"""

from __future__ import annotations

import torch


def token_nll(model, ids: torch.Tensor, attention_mask: torch.Tensor, scored: torch.Tensor,
              **forward: object) -> torch.Tensor:
    """−log p(ids[b, t] | ids[b, :t]) for every ``scored[b, t]`` (bool [B, T]; t ≥ 1), in row-major order, float32.

    ``forward`` goes to the model's call (e.g. a prompt's ``past_key_values`` with ``position_ids`` after it, when
    ``ids`` continue a cached prefix). Differentiable (training takes its mean); callers choose grad or inference
    mode."""
    import torch.nn.functional as F

    predicts = torch.zeros_like(scored)  # position t predicts token t + 1
    predicts[:, :-1] = scored[:, 1:]
    forward.setdefault("use_cache", False)
    logits = model(input_ids=ids, attention_mask=attention_mask, logits_to_keep=predicts, **forward).logits
    return F.cross_entropy(logits.float(), ids[scored], reduction="none")

"""Negative log-likelihood of chosen tokens of a batch, with the model's output head run only where it is needed.

One mechanism for the places that score some of a sequence's tokens: training's response loss
(:mod:`axwarehouse.methods.lm_objective`), the perplexity of generations
(:mod:`axwarehouse.judging.conditional_perplexity`, :mod:`axwarehouse.model.prefix_logp`) and, through
:func:`kept_logits`, the embedded judge's rating slot.
Only the positions that predict a scored token reach the output head (transformers' ``logits_to_keep`` with a
boolean mask, so a head-side step such as Gemma's logit soft-capping still applies): the other positions'
vocabulary-sized logits — prompts, padding — were most of the work and memory otherwise (256k per token on Gemma).
Transformers before the boolean ``logits_to_keep`` (vLLM's CPU build pins one) take a 1-D index of positions kept
in every row: there the head runs at the positions any row of the batch keeps (:func:`kept_logits`).
"""

from __future__ import annotations

import functools

import torch


@functools.cache
def _bool_logits_to_keep() -> bool:
    """Whether the installed transformers slices hidden states by a boolean [batch, seq] ``logits_to_keep``."""
    import transformers.modeling_utils

    return hasattr(transformers.modeling_utils, "slice_logits_to_keep")


def kept_logits(model, keep: torch.Tensor, **forward: object) -> torch.Tensor:
    """[N, vocab]: the model's logits at the ``keep`` positions (bool [B, T], N of them), in row-major order, the
    output head run only at those positions (or, on transformers without boolean ``logits_to_keep``, at the columns
    any row keeps)."""
    if _bool_logits_to_keep():
        return model(logits_to_keep=keep, **forward).logits
    cols = keep.any(dim=0).nonzero().squeeze(1)
    return model(logits_to_keep=cols, **forward).logits[keep[:, cols]]


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
    logits = kept_logits(model, predicts, input_ids=ids, attention_mask=attention_mask, **forward)
    return F.cross_entropy(logits.float(), ids[scored], reduction="none")

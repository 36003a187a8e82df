"""Mean log-probability of continuations after prompts, each distinct prompt run through the model once.

The proxy judge scores every steered output under its instruction's chat prompt and under the empty instruction's,
and its calibration scores each unsteered answer under its own and other instructions: many rows share a prompt
(the empty one is shared by all of them). Running the full prompt + continuation per row recomputes each prompt as
often as it is used. Here a prompt is run once (its key/value cache kept), and its continuations are run in
length-sorted, right-padded batches on top of that cache: the first continuation token is predicted by the
prompt's last position, the others by the continuation's own positions. Right padding never reaches a real token
(attention is causal and padding sits after the real tokens); the attention mask and explicit position ids make each
row equal to the same prompt + continuation run alone, up to floating-point summation order.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch

from axwarehouse import lazy_imports
from axwarehouse.model.capture import length_batches, pad_batch
from axwarehouse.model.loader import cache_kwarg
from axwarehouse.model.token_nll import token_nll

# Continuation tokens per forward batch. On CPU small batches keep the intermediate tensors in cache (as for
# activation capture, axwarehouse.model.capture.CPU_BATCH_TOKENS); the prompt's cached keys add to every row.
BATCH_TOKENS = 2048


@lazy_imports.inference_mode
def shared_prompt_logp(lm, prompts: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]],
                       batch_tokens: int = BATCH_TOKENS) -> list[float | None]:
    """Per row: mean log p(continuations[i] | prompts[i]) per token under ``lm``; None for an empty continuation.

    Each distinct prompt is run once; rows sharing it are batched over its cached keys and values."""
    if any(not len(p) for p in prompts):
        raise ValueError("scoring a continuation needs a non-empty prompt before it")
    model, pad = lm.model, lm.tokenizer.pad_token_id
    device = model.device
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, (p, c) in enumerate(zip(prompts, continuations)):
        if len(c):
            groups.setdefault(tuple(p), []).append(i)
    out: list[float | None] = [None] * len(prompts)
    for prompt, rows in groups.items():
        first = model(input_ids=torch.tensor([prompt], device=device), use_cache=True, logits_to_keep=1)
        first_logp = torch.log_softmax(first.logits[0, -1].float(), dim=-1).cpu()  # predicts token 0 of each row
        for batch in length_batches([len(continuations[i]) for i in rows], batch_tokens):
            idx = [rows[k] for k in batch]
            ids, mask = pad_batch([continuations[i] for i in idx], pad)
            nll = _continuation_nll(model, first.past_key_values, len(prompt), ids, mask)
            for r, i in enumerate(idx):
                n = len(continuations[i])
                total = float(nll[r, :n - 1].sum()) - float(first_logp[continuations[i][0]])
                out[i] = -total / n
    return out


def _continuation_nll(model, prompt_cache, prompt_len: int, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B, T-1]: −log p(ids[b, t+1] | prompt, ids[b, :t+1]) (padding positions hold zeros; callers slice)."""
    b, t = ids.shape
    if t == 1:
        return torch.zeros((b, 0))
    device = model.device
    cache = copy.deepcopy(prompt_cache)  # the forward appends to it; the prompt's cache serves the next batch
    cache.batch_repeat_interleave(b)
    full_mask = torch.cat([torch.ones((b, prompt_len), dtype=mask.dtype), mask], dim=1)
    positions = torch.arange(prompt_len, prompt_len + t).expand(b, -1)
    scored = mask.bool().clone()
    scored[:, 0] = False  # token 0 of each row is predicted by the prompt's last position (the caller's first_logp)
    nll = torch.zeros((b, t - 1))
    nll[scored[:, 1:]] = token_nll(model, ids.to(device), full_mask.to(device), scored.to(device),
                                   position_ids=positions.to(device), use_cache=True, **{cache_kwarg(model): cache}).cpu()
    return nll

"""Mean log-probability of continuations after prompts, each distinct prompt run through the model once.

The proxy judge scores every steered output under its instruction's chat prompt and under the empty instruction's,
and its calibration scores each unsteered answer under its own and other instructions: many rows share a prompt
(the empty one is shared by all of them). Running the full prompt + continuation per row recomputes each prompt as
often as it is used. Here the distinct prompts are run once, together (left-padded, their keys and values kept), and
the continuations are run in length-sorted, right-padded batches on top of those caches, each row over its own
prompt's: the first continuation token is predicted by the prompt's last position, the others by the
continuation's own positions.

Batches mix prompts. Few rows share a prompt (an instruction has one output per method and factor, and the judge
measures 96 outputs at a time), so batches of one prompt's rows would be matrix products of a few hundred tokens,
well below a CPU's rate, each paying every layer's per-call overhead (bench/proxy_judge_parts.py). A row's
attention sees its prompt's real positions and its own continuation: the padding before a shorter prompt and after
a shorter continuation is masked, and explicit position ids count each row's real tokens only, so every row equals
the same prompt + continuation run alone, up to floating-point summation order (in bfloat16 that order moves a mean
log-probability by up to ~0.06 nats per token: bench/proxy_judge_speed.py). Prompts are cut into chunks whose
caches together hold at most ``prompt_cache_tokens`` positions, so memory stays bounded however many prompts a call
brings. A batch's cache is its rows' prompts selected out of the chunk's per-layer caches (transformers ≥ 4.56).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from axwarehouse import lazy_imports
from axwarehouse.model.capture import left_pad, length_batches, pad_batch
from axwarehouse.model.loader import cache_kwarg
from axwarehouse.model.token_nll import token_nll

# Continuation tokens per forward batch. On CPU small batches keep the intermediate tensors in cache (as for
# activation capture, axwarehouse.model.capture.CPU_BATCH_TOKENS); the prompts' cached keys add to every row.
BATCH_TOKENS = 2048
# Cached prompt positions (distinct prompts × their longest) held at once: a chunk of prompts is run together and
# serves its rows before the next is run. At most PROMPTS_PER_CHUNK prompts, each keeping its first-token
# log-probabilities over the vocabulary (256k floats on Gemma).
PROMPT_CACHE_TOKENS = 8192
PROMPTS_PER_CHUNK = 64


@dataclass
class _PromptCache:
    """Distinct prompts run together: their cache ([n, …, width, …] per layer), real lengths, padding mask and the
    log-probabilities their last real positions give the first continuation token."""

    cache: object
    lengths: torch.Tensor  # [n]
    mask: torch.Tensor  # [n, width], left-padded
    first_logp: torch.Tensor  # [n, vocab], float32, on the CPU

    def rows(self, index: torch.Tensor) -> object:
        """A cache for a batch whose row ``r`` continues prompt ``index[r]`` (the chunk's cache is left intact)."""
        cache = copy.copy(self.cache)
        cache.layers = [copy.copy(layer) for layer in self.cache.layers]
        for layer in cache.layers:
            layer.batch_select_indices(index.to(layer.keys.device))
        return cache


@lazy_imports.inference_mode
def shared_prompt_logp(lm, prompts: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]],
                       batch_tokens: int = BATCH_TOKENS,
                       prompt_cache_tokens: int = PROMPT_CACHE_TOKENS) -> list[float | None]:
    """Per row: mean log p(continuations[i] | prompts[i]) per token under ``lm``; None for an empty continuation.

    Each distinct prompt is run once; rows are batched across prompts over their prompts' cached keys and values."""
    if any(not len(p) for p in prompts):
        raise ValueError("scoring a continuation needs a non-empty prompt before it")
    model, pad = lm.model, lm.tokenizer.pad_token_id
    by_prompt: dict[tuple[int, ...], list[int]] = {}
    for i, (p, c) in enumerate(zip(prompts, continuations)):
        if len(c):
            by_prompt.setdefault(tuple(p), []).append(i)
    out: list[float | None] = [None] * len(prompts)
    for chunk in _prompt_chunks(sorted(by_prompt, key=len), prompt_cache_tokens):
        run = _run_prompts(model, chunk, pad)
        rows = [(k, i) for k, p in enumerate(chunk) for i in by_prompt[p]]
        for batch in length_batches([len(continuations[i]) for _, i in rows], batch_tokens):
            which = torch.tensor([rows[b][0] for b in batch])
            idx = [rows[b][1] for b in batch]
            ids, mask = pad_batch([continuations[i] for i in idx], pad)
            nll = _continuation_nll(model, run, which, ids, mask)
            first = run.first_logp[which, ids[:, 0]]
            for r, i in enumerate(idx):
                n = len(continuations[i])
                out[i] = -(float(nll[r, :n - 1].sum()) - float(first[r])) / n
    return out


def _prompt_chunks(prompts: list[tuple[int, ...]], budget: int) -> list[list[tuple[int, ...]]]:
    """Length-sorted prompts cut so that each chunk's count × longest ≤ ``budget`` and count ≤
    :data:`PROMPTS_PER_CHUNK` (at least one prompt each)."""
    chunks: list[list[tuple[int, ...]]] = []
    for p in prompts:
        if chunks and (len(chunks[-1]) + 1) * len(p) <= budget and len(chunks[-1]) < PROMPTS_PER_CHUNK:
            chunks[-1].append(p)
        else:
            chunks.append([p])
    return chunks


def _run_prompts(model, prompts: list[tuple[int, ...]], pad: int) -> _PromptCache:
    """One left-padded forward of ``prompts``, keeping the cache and the head's output at the last position (every
    prompt's last real token). Left, so that each prompt's cached keys end right before its continuation: no padding
    sits between them, and a sliding-window layer's window counts only real positions."""
    device = model.device
    batch = left_pad(prompts, pad)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    lengths = mask.sum(dim=1)
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    res = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
                use_cache=True, logits_to_keep=1)
    first = torch.log_softmax(res.logits[:, -1].float(), dim=-1).cpu()  # [n, vocab]: row order = prompts' order
    return _PromptCache(res.past_key_values, lengths, mask, first)


def _continuation_nll(model, run: _PromptCache, which: torch.Tensor, ids: torch.Tensor,
                      mask: torch.Tensor) -> torch.Tensor:
    """[B, T-1]: −log p(ids[b, t+1] | prompt ``which[b]``, ids[b, :t+1]) (padding positions hold zeros; callers
    slice)."""
    b, t = ids.shape
    if t == 1:
        return torch.zeros((b, 0))
    device = model.device
    full_mask = torch.cat([run.mask[which], mask], dim=1)
    positions = run.lengths[which][:, None] + torch.arange(t)
    scored = mask.bool().clone()
    scored[:, 0] = False  # token 0 of each row is predicted by the prompt's last position (the caller's first)
    nll = torch.zeros((b, t - 1))
    nll[scored[:, 1:]] = token_nll(model, ids.to(device), full_mask.to(device), scored.to(device),
                                   position_ids=positions.to(device), use_cache=True,
                                   **{cache_kwarg(model): run.rows(which)}).cpu()
    return nll

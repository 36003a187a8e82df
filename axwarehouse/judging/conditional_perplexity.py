"""Perplexity of generations under the unsteered target model (reported beside the judge scores, never scored).

PPL = exp(mean cross-entropy of the generated tokens given the plain instruction prompt). Unlike AxBench (which
scores prompt + generation for methods but the generation alone for the prompt baseline, docs/axbench-recipes.md §4.3), every method
is measured the same way: the generation conditioned on the *unsteered* chat prompt of the original instruction,
so the numbers are comparable across methods and the prompt tokens do not dilute them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from axwarehouse import lazy_imports

from axwarehouse.model.capture import length_batches
from axwarehouse.model.token_nll import token_nll


@lazy_imports.inference_mode
def conditional_perplexity(lm, prompts: Sequence[Sequence[int]], generations: Sequence[Sequence[int]],
                           batch_tokens: int = 8192) -> list[float | None]:
    """Per row: exp(mean CE of ``generations[i]`` after ``prompts[i]``); None for an empty generation. The output
    head runs only at the positions that predict a generation token (:func:`axwarehouse.model.token_nll.token_nll`)."""
    if any(not len(p) for p in prompts):
        raise ValueError("conditional perplexity needs a non-empty prompt before every generation")
    seqs = [list(p) + list(g) for p, g in zip(prompts, generations)]
    out: list[float | None] = [None] * len(seqs)
    live = [i for i, g in enumerate(generations) if len(g)]
    pad = lm.tokenizer.pad_token_id
    device = lm.model.device
    for batch in length_batches([len(seqs[i]) for i in live], batch_tokens):
        idx = [live[k] for k in batch]
        width = max(len(seqs[i]) for i in idx)
        ids = torch.full((len(idx), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        scored = torch.zeros((len(idx), width), dtype=torch.bool)  # the generation's tokens
        for r, i in enumerate(idx):
            ids[r, :len(seqs[i])] = torch.tensor(seqs[i])
            mask[r, :len(seqs[i])] = 1
            scored[r, len(prompts[i]):len(seqs[i])] = True
        nll = token_nll(lm.model, ids.to(device), mask.to(device), scored.to(device)).cpu()
        for i, row_nll in zip(idx, torch.split(nll, [len(generations[i]) for i in idx])):
            out[i] = math.exp(float(row_nll.mean()))
    return out

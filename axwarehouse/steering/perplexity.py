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

from axwarehouse.lm.capture import length_batches


@lazy_imports.inference_mode
def conditional_perplexity(lm, prompts: Sequence[Sequence[int]], generations: Sequence[Sequence[int]],
                           batch_tokens: int = 8192) -> list[float | None]:
    """Per row: exp(mean CE of ``generations[i]`` after ``prompts[i]``); None for an empty generation."""
    seqs = [list(p) + list(g) for p, g in zip(prompts, generations)]
    out: list[float | None] = [None] * len(seqs)
    live = [i for i, g in enumerate(generations) if len(g)]
    pad = lm.tokenizer.pad_token_id
    for batch in length_batches([len(seqs[i]) for i in live], batch_tokens):
        idx = [live[k] for k in batch]
        width = max(len(seqs[i]) for i in idx)
        ids = torch.full((len(idx), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, i in enumerate(idx):
            ids[r, :len(seqs[i])] = torch.tensor(seqs[i])
            mask[r, :len(seqs[i])] = 1
        ids, mask = ids.to(lm.model.device), mask.to(lm.model.device)
        logp = torch.log_softmax(lm.model(input_ids=ids, attention_mask=mask, use_cache=False).logits.float(), -1)
        for r, i in enumerate(idx):
            start, end = len(prompts[i]), len(seqs[i])
            targets = ids[r, start:end]
            nll = -logp[r, start - 1:end - 1].gather(1, targets[:, None]).mean()
            out[i] = math.exp(float(nll))
    return out

"""Prompting as a method, AxBench's two prompt baselines under one name.

Detection (AxBench's ``PromptDetection``; docs/axbench-recipes.md §2.4): the target model itself rates how present
the concept is in the raw response, with the concept-relevance judge prompt (docs/axbench-recipes.md §5.1) wrapped
in its chat template. Two modes (``--set prompt.mode=...``):

* ``generate`` (AxBench): sample at temperature 1.0 up to ``max_new_tokens`` (512), parse ``Rating: [[x]]`` after
  the last "Rating:" (docs/axbench-recipes.md §5.2); an unparseable or out-of-range answer scores −1 (AxBench's detection rule).
  Seeded per concept, so a re-run reproduces the same scores.
* ``expected``: force the answer prefix ``Rating: [[`` and score the expected rating Σ_k k·p(k) over the next-token
  probabilities of "0", "1", "2" (renormalised). One forward per example, deterministic; a small model that rarely
  follows the output format still gives a graded score.

No training: the artifact only records the concept text. No token scores (one score per example).

Steering (AxBench's ``PromptSteering``, ``steering = "prompt"``): an LLM-written steering prompt per concept that
the unsteered model answers with each instruction (:mod:`axwarehouse.steering.prompt_baseline`); a baseline, so
``axw steer --method all`` leaves it out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch

from axwarehouse import lazy_imports

from axwarehouse.errors import AxwError
from axwarehouse.model.capture import left_pad
from axwarehouse.methods.base import Artifact, ConceptData, Context, Method
from axwarehouse.methods.registry import register

CONCEPT_JUDGE = """[System]
Please act as an impartial judge and evaluate whether the specified concept is presented in the sentence fragment \
provided below. Focus solely on whether the concept is clearly incorporated, without regard for grammar or logical \
coherence.

Begin your evaluation by providing a short explanation of whether the concept is clearly incorporated. Point out \
references to the concept in the fragment, noting any minimal or awkward incorporations. After providing your \
explanation, rate the concept's relevance on a scale from 0 to 2, where 0 indicates the concept is not present at all, \
1 indicates the concept is somewhat present but minimally or awkwardly incorporated, and 2 indicates the concept is \
more fully and effectively incorporated, with stronger and more natural integration. Provide your rating using this \
exact format: "Rating: [[score]]".

[Concept Start]
{concept}
[Concept End]

[Sentence Fragment Start]
{sentence}
[Sentence Fragment End]"""

ANSWER_PREFIX = "Rating: [["


def parse_rating(text: str) -> float | None:
    """AxBench's judge parser (docs/axbench-recipes.md §5.2): after the last "Rating:", first line, brackets removed, trailing
    ./quotes/* stripped, a float in [0, 2]; None otherwise."""
    if "Rating:" not in text:
        return None
    tail = text.rsplit("Rating:", 1)[1].strip().split("\n")[0].replace("[", "").replace("]", "")
    tail = re.sub(r"[.*\"']+$", "", tail.strip()).strip().strip("*\"'")
    try:
        value = float(tail)
    except ValueError:
        return None
    return value if 0.0 <= value <= 2.0 else None


@register("prompt")
class Prompt(Method):
    """Prompting as a method: detection (AxBench's ``PromptDetection``) and the steering baseline (its
    ``PromptSteering``, :mod:`axwarehouse.steering.prompt_baseline`)."""

    evaluations = ("latent", "steering")
    scoring = "examples"
    steering = "prompt"
    steering_baseline = True

    @dataclass(frozen=True)
    class Config:
        mode: str = "generate"
        max_new_tokens: int = 512
        temperature: float = 1.0
        batch_size: int = 16

    def fit(self, data: ConceptData) -> Artifact:
        if self.config.mode not in ("generate", "expected"):
            raise AxwError(f"prompt.mode must be 'generate' or 'expected', not {self.config.mode!r}")
        return Artifact(None, 0.0, None, extra={"concept": data.concept, "mode": self.config.mode})

    def prompt_ids(self, ctx: Context, concept: str, response: str) -> list[int]:
        return ctx.chat.prompt_ids(CONCEPT_JUDGE.format(concept=concept, sentence=response))

    def steering_prompts(self, client, concepts: dict[int, str], seed: int) -> dict[int, str]:
        """An LLM-written steering prompt per concept (a fixed sentence naming it when the LLM gives none)."""
        from axwarehouse.steering.prompt_baseline import steering_prompts

        return {c: p for c, (p, _fallback) in steering_prompts(client, concepts, seed=seed).items()}

    def steered_input(self, steering_prompt: str, instruction: str) -> str:
        from axwarehouse.steering.prompt_baseline import steered_instruction

        return steered_instruction(steering_prompt, instruction)

    def score_examples(self, artifact: Artifact, concept: str, inputs: list[str], outputs: list[str],
                       ctx: Context) -> np.ndarray:
        concept = artifact.extra.get("concept", concept)
        seqs = [self.prompt_ids(ctx, concept, o) for o in outputs]
        if self.config.mode == "expected":
            return self._expected(ctx, seqs)
        return self._generated(ctx, seqs, artifact)

    def _left_padded(self, ctx: Context, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        batch = left_pad(seqs, ctx.lm.tokenizer.pad_token_id)
        return batch["input_ids"].to(ctx.device), batch["attention_mask"].to(ctx.device)

    @lazy_imports.no_grad
    def _expected(self, ctx: Context, seqs: list[list[int]]) -> np.ndarray:
        tok = ctx.lm.tokenizer
        prefix = list(tok(ANSWER_PREFIX, add_special_tokens=False)["input_ids"])
        digits = [tok.convert_tokens_to_ids(t) for t in ("0", "1", "2")]
        if any(d is None or d == tok.unk_token_id for d in digits):
            raise AxwError("prompt.mode=expected needs single-token digits 0, 1, 2 in the tokenizer")
        out = np.empty(len(seqs))
        for start in range(0, len(seqs), self.config.batch_size):
            batch = [s + prefix for s in seqs[start:start + self.config.batch_size]]
            ids, mask = self._left_padded(ctx, batch)
            logits = ctx.lm.model(input_ids=ids, attention_mask=mask, use_cache=False,
                                  logits_to_keep=1).logits[:, -1].float()  # left-padded: the last position
            p = torch.softmax(logits[:, digits], -1)
            out[start:start + len(batch)] = (p @ torch.tensor([0.0, 1.0, 2.0], device=p.device)).cpu().numpy()
        return out

    @lazy_imports.no_grad
    def _generated(self, ctx: Context, seqs: list[list[int]], artifact: Artifact) -> np.ndarray:
        tok = ctx.lm.tokenizer
        # seeded per concept text so a re-run (or another concept order) samples the same ratings
        torch.manual_seed(self.seed + sum(map(ord, artifact.extra.get("concept", ""))))
        out = np.empty(len(seqs))
        for start in range(0, len(seqs), self.config.batch_size):
            batch = seqs[start:start + self.config.batch_size]
            ids, mask = self._left_padded(ctx, batch)
            gen = ctx.lm.model.generate(input_ids=ids, attention_mask=mask, do_sample=True,
                                        temperature=self.config.temperature, top_p=1.0, top_k=0,
                                        max_new_tokens=self.config.max_new_tokens, pad_token_id=tok.pad_token_id)
            texts = tok.batch_decode(gen[:, ids.shape[1]:], skip_special_tokens=True)
            out[start:start + len(batch)] = [r if (r := parse_rating(t)) is not None else -1.0 for t in texts]
        return out

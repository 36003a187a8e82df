"""What steered generation takes and gives, shared by the engines: a row to generate (:class:`GenRow`), its
result (:class:`GenOutput`), and the end-of-turn ids that stop it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class GenRow:
    """One generation: prompt token ids, the steering parameters of its row, its seed."""

    prompt_ids: tuple[int, ...]
    direction: np.ndarray | None = None  # [d]; None = unsteered
    strength: float = 0.0  # factor × magnitude a_c
    seed: int = 0


@dataclass
class GenOutput:
    token_ids: list[int]  # new tokens up to (not including) the first end-of-turn token
    text: str
    finished: bool  # stopped on an end-of-turn token (False: hit max_new_tokens)


def cut_at_stop(tokenizer, ids: list[int], stop: set[int]) -> GenOutput:
    """A generated sequence as a result: its tokens up to the first end-of-turn id, their text, whether one came."""
    end = next((k for k, t in enumerate(ids) if t in stop), None)
    body = ids if end is None else ids[:end]
    return GenOutput(body, tokenizer.decode(body, skip_special_tokens=True), end is not None)


def eos_ids(lm) -> set[int]:
    """End-of-turn ids: the generation config's and the tokenizer's."""
    cfg = lm.model.generation_config.eos_token_id
    ids = set(cfg if isinstance(cfg, list) else [cfg]) | {lm.tokenizer.eos_token_id}
    ids.discard(None)
    return ids

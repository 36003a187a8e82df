"""Chat-template renderings AxBench uses (docs/axbench-recipes.md §2.1, §2.2, §3.1), as token ids.

* P (prefix length): render one-user-message chats "1" and "2" (no generation prompt); P = first differing token.
  Those P tokens (BOS, role header, and for SmolLM2 its default system prompt) are never scored.
* S (suffix length): the same comparison from the end (``<|im_end|>\\n`` → 2).
* Binarized *train* text: [user, assistant] rendered **with** the generation prompt, last S tokens removed.
* *Eval* text: [user, assistant] rendered **without** the generation prompt, last S tokens removed.
* LM-style prompt: [user] with the generation prompt (steering and LM-objective methods).

AxBench decodes the trimmed ids and re-tokenizes them with BOS; we keep the ids, which is the same sequence without
the round-trip's retokenisation drift. Sequences are truncated to ``MAX_LENGTH`` tokens like AxBench's tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_LENGTH = 1024


def _ids(tokenizer, messages: list[dict], add_generation_prompt: bool) -> list[int]:
    if getattr(tokenizer, "chat_template", None):
        out = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=add_generation_prompt)
        # transformers 5 returns a BatchEncoding, 4.x a list
        ids = out["input_ids"] if not isinstance(out, list) else out
        return list(ids)
    # base model without a template: plain concatenation, BOS only (AxBench: P = 1)
    text = "".join(m["content"] for m in messages)
    return list(tokenizer(text, add_special_tokens=True)["input_ids"])


@dataclass(frozen=True)
class ChatFormat:
    """Prefix/suffix lengths of a tokenizer's chat template and the renderings built on them."""

    tokenizer: object
    prefix_len: int
    suffix_len: int

    @classmethod
    def of(cls, tokenizer) -> ChatFormat:
        a = _ids(tokenizer, [{"role": "user", "content": "1"}], False)
        b = _ids(tokenizer, [{"role": "user", "content": "2"}], False)
        p = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        s = next((i for i, (x, y) in enumerate(zip(reversed(a), reversed(b))) if x != y), 0)
        return cls(tokenizer, p, s)

    def _trim(self, ids: list[int]) -> list[int]:
        ids = ids[: len(ids) - self.suffix_len] if self.suffix_len else ids
        return ids[:MAX_LENGTH]

    def train_ids(self, instruction: str, response: str) -> list[int]:
        """Binarized training text (DiffMean, PCA, LAT, Probe, ...)."""
        msgs = [{"role": "user", "content": instruction}, {"role": "assistant", "content": response}]
        return self._trim(_ids(self.tokenizer, msgs, True))

    def eval_ids(self, instruction: str, response: str) -> list[int]:
        """Latent-evaluation text: ends right after the response."""
        msgs = [{"role": "user", "content": instruction}, {"role": "assistant", "content": response}]
        return self._trim(_ids(self.tokenizer, msgs, False))

    def prompt_ids(self, instruction: str) -> list[int]:
        """Instruction prompt with the generation prompt (steering, LM-style training)."""
        return _ids(self.tokenizer, [{"role": "user", "content": instruction}], True)[:MAX_LENGTH]

    def ids_for(self, split: str, instruction: str, response: str) -> list[int]:
        """The rendering AxBench uses for a generations split."""
        return self.train_ids(instruction, response) if split == "train" else self.eval_ids(instruction, response)

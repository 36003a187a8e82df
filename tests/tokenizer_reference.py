"""The demo texts as the chat-rendered strings the stages tokenize, and a compact fingerprint of token ids.

Shared by tests/test_tokenizer_gguf.py and tests/data/record_llamacpp_token_ids.py (which records llama.cpp's ids
of the same strings from the same GGUF files into tests/data/gguf_token_ids.json).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import polars as pl

DEMO = Path(__file__).resolve().parents[1] / "axwarehouse" / "data" / "axbench-concept10" / "prod_2b_l10_v1"
REFERENCE = Path(__file__).resolve().parent / "data" / "gguf_token_ids.json"


def demo_texts(tokenizer) -> list[tuple[str, bool]]:
    """Every demo example (train split, then latent_eval, file order) as the string `model/chat.py` tokenizes and
    whether the tokenizer adds BOS to it: rendered with the model's chat template (train with the generation
    prompt, latent_eval without; the template writes its own BOS), or for a model without a template the plain
    concatenation of instruction and response with BOS added."""
    train = pl.read_parquet(DEMO / "generate" / "train_data.parquet")
    evald = pl.read_parquet(DEMO / "inference" / "latent_eval_data.parquet")
    templated = bool(getattr(tokenizer, "chat_template", None))
    out = []
    for frame, prompt in ((train, True), (evald, False)):
        for inp, outp in zip(frame["input"].to_list(), frame["output"].to_list()):
            msgs = [{"role": "user", "content": inp or ""}, {"role": "assistant", "content": outp or ""}]
            if templated:
                out.append((tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=prompt), False))
            else:
                out.append(((inp or "") + (outp or ""), True))
    return out


def fingerprint(ids: list[int]) -> str:
    """First 16 hex digits of the sha256 of the comma-joined ids."""
    return hashlib.sha256(",".join(map(str, ids)).encode()).hexdigest()[:16]

"""Readable text for stored token strings (the per-token highlighter shows tokens as the model saw them).

`activations.token` holds ``convert_ids_to_tokens`` strings: byte-level BPE (GPT-2, Llama 3, SmolLM2) spells a
space as ``Ġ`` and a newline as ``Ċ``; SentencePiece (Gemma, Llama 2) spells a space as ``▁``. Mapping back per
token needs no tokenizer: the byte-level alphabet is a fixed table.
"""

from __future__ import annotations

import functools


@functools.lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    # GPT-2's bytes_to_unicode table, inverted (printable bytes map to themselves, the rest to U+0100 onwards)
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


@functools.lru_cache(maxsize=65536)
def display_token(token: str | None) -> str:
    """The text a token stands for (special tokens such as ``<|im_end|>`` stay as they are)."""
    if token is None:
        return ""
    if "▁" in token:
        return token.replace("▁", " ")
    dec = _byte_decoder()
    if token.startswith("<") and token.endswith(">"):
        return token
    if all(ch in dec for ch in token):
        return bytes(dec[ch] for ch in token).decode("utf-8", errors="replace")
    return token

"""The model's own tokenizer for a model read from a GGUF file.

transformers builds a GGUF model's tokenizer from the vocabulary and merges in the file, but for BPE ("gpt2")
vocabularies it always installs a plain ByteLevel pre-tokenizer: the GPT-2 split regex and nothing else. The model's
original tokenizer may split more finely first. SmolLM2's own ``tokenizer.json`` splits every digit off on its own
(a ``Digits(individual_digits=True)`` step before ByteLevel), and llama.cpp reads the same GGUF with that split too:
the file's ``tokenizer.ggml.pre`` is ``smollm``, for which llama.cpp's ``llama-vocab.cpp`` applies the regex
``\\p{N}`` before the GPT-2 one. Without it, ``"\\n\\n1"`` becomes ``Ċ Ċ 1`` instead of the model's ``ĊĊ 1``, and
the model reads token sequences it was never trained on.

:func:`model_pretokenizer` rebuilds the pre-tokenizer the GGUF's ``tokenizer.ggml.pre`` names, for the types whose
llama.cpp regexes are the GPT-2 regex preceded (or not) by single-digit splitting. SentencePiece vocabularies
("llama" model, e.g. Gemma 3) have no pre-tokenizer in llama.cpp and are left as transformers builds them (their
ids equal llama.cpp's on the demo texts, ``tests/test_tokenizer_gguf.py``).
"""

from __future__ import annotations

import functools
from pathlib import Path

from axwarehouse.errors import AxwError

#: llama.cpp pre-tokenizer types whose regex list is ["\p{N}", GPT-2 regex] (llama-vocab.cpp) -> digits split first
DIGITS_THEN_GPT2 = frozenset({"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone"})
#: types whose regex list is the GPT-2 regex alone: the ByteLevel pre-tokenizer transformers already builds
GPT2_ONLY = frozenset({"default", "gpt2", "gpt-2", "mpt", "olmo", "jais"})


# Fixed sizes of GGUF's scalar value types (gguf.GGUFValueType: UINT8 … FLOAT64, STRING = 8, ARRAY = 9)
_SCALAR_BYTES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


@functools.lru_cache(maxsize=8)
def gguf_tokenizer_kind(path: str) -> tuple[str, str]:
    """(``tokenizer.ggml.model``, ``tokenizer.ggml.pre``) of a GGUF file ("" for a missing key).

    Reads the header's key/value pairs only until both keys are seen (they precede the vocabulary arrays in the
    files llama.cpp's converter writes). ``gguf.GGUFReader`` would parse every field first, each vocabulary entry
    through numpy indexing — many seconds for Gemma 3's 262k-entry vocabulary, to read two short strings."""
    import struct

    wanted = {"tokenizer.ggml.model": "", "tokenizer.ggml.pre": ""}
    seen: set[str] = set()
    with open(path, "rb") as f:
        def read(fmt: str):
            return struct.unpack("<" + fmt, f.read(struct.calcsize(fmt)))[0]

        def skip(vtype: int) -> None:
            if vtype == 8:
                f.seek(read("Q"), 1)
            elif vtype == 9:
                etype, count = read("I"), read("Q")
                if etype in _SCALAR_BYTES:
                    f.seek(count * _SCALAR_BYTES[etype], 1)
                else:
                    for _ in range(count):
                        skip(etype)
            else:
                f.seek(_SCALAR_BYTES[vtype], 1)

        if f.read(4) != b"GGUF" or read("I") not in (2, 3):
            raise AxwError(f"{path}: not a little-endian GGUF file of version 2 or 3")
        read("Q")  # tensor count
        for _ in range(read("Q")):
            key = f.read(read("Q")).decode("utf-8")
            vtype = read("I")
            if key in wanted and vtype == 8:
                wanted[key] = f.read(read("Q")).decode("utf-8")
                seen.add(key)
                if len(seen) == len(wanted):
                    break
            else:
                skip(vtype)
    return wanted["tokenizer.ggml.model"], wanted["tokenizer.ggml.pre"]


def model_pretokenizer(model: str, pre: str):
    """The ``tokenizers`` pre-tokenizer llama.cpp applies for a GGUF vocabulary, or None to keep transformers' one.

    Raises AxwError for a BPE vocabulary whose pre-tokenizer type we have not mapped: tokenizing it with the plain
    GPT-2 split could silently feed the model unseen token sequences."""
    from tokenizers import pre_tokenizers

    if model != "gpt2":
        return None  # SentencePiece ("llama"), WordPiece, ...: no regex pre-tokenizer in llama.cpp
    if pre in DIGITS_THEN_GPT2:
        return pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
        ])
    if pre in GPT2_ONLY or pre == "":
        return None
    raise AxwError(f"GGUF pre-tokenizer type {pre!r} is not supported yet (known: "
                   f"{', '.join(sorted(DIGITS_THEN_GPT2 | GPT2_ONLY))}); use the model's HF directory instead")


def load_tokenizer(path: str, gguf_file: str | None = None, **kwargs):
    """``AutoTokenizer.from_pretrained`` with, for a GGUF file, the pre-tokenizer the model itself uses."""
    import transformers

    if gguf_file is None:
        return transformers.AutoTokenizer.from_pretrained(path, **kwargs)
    tokenizer = transformers.AutoTokenizer.from_pretrained(path, gguf_file=gguf_file, **kwargs)
    pre = model_pretokenizer(*gguf_tokenizer_kind(str(Path(path) / gguf_file)))
    if pre is not None:
        tokenizer.backend_tokenizer.pre_tokenizer = pre
    return tokenizer

"""The embedded GGUF models tokenize like the models' own tokenizers: on every demo text our ids equal llama.cpp's
reading of the same GGUF file (reference ids recorded by tests/data/record_llamacpp_token_ids.py)."""

from __future__ import annotations

import functools
import json

import pytest

from axwarehouse.model.chat import ChatFormat
from axwarehouse.model.converted import usable_copy
from axwarehouse.model.loader import load, resolve
from axwarehouse.model.tokenizer import load_tokenizer
from tokenizer_reference import REFERENCE, demo_texts, fingerprint


@pytest.fixture(scope="module")
def reference():
    return json.loads(REFERENCE.read_text())


@functools.lru_cache(maxsize=None)
def tokenizer_of(spec: str, via: str = "gguf"):
    """The tokenizer built from the GGUF file, or (``via="copy"``) the one saved in its converted copy, which
    every load after the first reads (axwarehouse/model/converted.py). Built once per spec and route in this file's
    process (the tests only read it): transformers parses the whole GGUF vocabulary to build it."""
    src = resolve(spec)
    if via == "copy":
        if usable_copy(src) is None:
            load(spec)  # converts
        return src, load_tokenizer(str(usable_copy(src)))
    return src, load_tokenizer(src.path, src.gguf_file)


@pytest.mark.parametrize("spec,via", [("embedded:smollm2", "gguf"), ("embedded:smollm2", "copy"),
                                      ("embedded:gemma3-270m", "gguf")])
def test_demo_texts_tokenize_as_llama_cpp_reads_the_gguf(spec, via, reference):
    src, tok = tokenizer_of(spec, via)
    want = reference[spec]
    assert want["gguf"] == src.gguf_file
    ids = [tok(t, add_special_tokens=bos)["input_ids"] for t, bos in demo_texts(tok)]
    got = [fingerprint(x) for x in ids]
    differ = [i for i, (a, b) in enumerate(zip(got, want["fingerprints"])) if a != b]
    assert len(got) == want["n_texts"] and not differ, f"{len(differ)} texts differ, first: {differ[:5]}"
    assert sum(map(len, ids)) == want["total_tokens"]


def test_smollm2_splits_digits_before_byte_level():
    _, tok = tokenizer_of("embedded:smollm2")
    # the model's own tokenizer.json: Digits(individual) then ByteLevel; llama.cpp's "smollm" pre-tokenizer
    assert tok.tokenize("\n\n1. 2024 x") == ["ĊĊ", "1", ".", "Ġ", "2", "0", "2", "4", "Ġx"]
    # what the stages feed the model on the demo data: 272,613 tokens (272,766 with the plain ByteLevel split)
    chat = ChatFormat.of(tok)
    import polars as pl

    from tokenizer_reference import DEMO

    total = 0
    for path, split in ((DEMO / "generate" / "train_data.parquet", "train"),
                        (DEMO / "inference" / "latent_eval_data.parquet", "latent_eval")):
        frame = pl.read_parquet(path)
        total += sum(len(chat.ids_for(split, i or "", o or "")) for i, o in zip(frame["input"], frame["output"]))
    assert total == 272_613


@pytest.mark.parametrize("first", ["arrays", "keys"])
def test_tokenizer_kind_reads_the_header_as_gguf_reader_does(tmp_path, first):
    """The header scan behind ``gguf_tokenizer_kind`` gives GGUFReader's values, also when arrays of every element
    kind (strings, fixed-size numbers) and scalars stand before the two keys; a missing key reads as ""."""
    import gguf
    import numpy as np

    from axwarehouse.model.tokenizer import gguf_tokenizer_kind

    path = tmp_path / f"{first}.gguf"
    w = gguf.GGUFWriter(str(path), "llama")

    def others():
        w.add_array("test.strings", ["a", "bb", "ccc" * 40])
        w.add_array("test.floats", [0.5, 1.5, 2.5])
        w.add_uint64("test.u64", 7)
        w.add_bool("test.flag", True)
        w.add_string("test.name", "tokenizer.ggml.pre")

    if first == "arrays":
        others()
    w.add_string("tokenizer.ggml.model", "gpt2")
    w.add_string("tokenizer.ggml.pre", "smollm")
    if first == "keys":
        others()
    w.add_tensor("t", np.zeros(4, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    reader = gguf.GGUFReader(str(path))
    want = tuple(str(reader.fields[k].contents()) for k in ("tokenizer.ggml.model", "tokenizer.ggml.pre"))
    assert gguf_tokenizer_kind(str(path)) == want == ("gpt2", "smollm")

    bare = tmp_path / "bare.gguf"
    w = gguf.GGUFWriter(str(bare), "llama")
    w.add_array("test.strings", ["x"])
    w.add_string("tokenizer.ggml.model", "llama")
    w.add_tensor("t", np.zeros(4, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    assert gguf_tokenizer_kind(str(bare)) == ("llama", "")

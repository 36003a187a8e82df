"""Record llama.cpp's token ids of the demo texts for each embedded model's GGUF (a developer tool, not a test).

Needs llama-cpp-python, which is NOT a project dependency (it compiles llama.cpp): install it in a scratch venv,
together with this repository, and run

    python tests/data/record_llamacpp_token_ids.py

It loads each GGUF vocabulary-only with llama.cpp, tokenizes the demo texts as the stages render them (special tokens
parsed; BOS added only where the model has no chat template, as `model/chat.py` does), and writes per-text fingerprints and the token total to
tests/data/gguf_token_ids.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import llama_cpp  # noqa: E402

from axwarehouse.model.loader import resolve  # noqa: E402
from axwarehouse.model.tokenizer import load_tokenizer  # noqa: E402
from tokenizer_reference import REFERENCE, demo_texts, fingerprint  # noqa: E402


def main() -> None:
    out = {}
    for spec in ("embedded:smollm2", "embedded:gemma3-270m"):
        src = resolve(spec)
        texts = demo_texts(load_tokenizer(src.path, src.gguf_file))  # the template renders text only
        llm = llama_cpp.Llama(str(Path(src.path) / src.gguf_file), vocab_only=True, verbose=False)
        ids = [llm.tokenize(t.encode("utf-8"), add_bos=bos, special=True) for t, bos in texts]
        out[spec] = {"gguf": src.gguf_file, "llama_cpp_python": llama_cpp.__version__, "n_texts": len(ids),
                     "total_tokens": sum(map(len, ids)), "fingerprints": [fingerprint(x) for x in ids]}
        print(spec, out[spec]["n_texts"], "texts", out[spec]["total_tokens"], "tokens")
    REFERENCE.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()

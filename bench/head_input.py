"""Batched generation with the output head given the strided last-position slice (plain ``nn.Linear``, the
baseline) and given a contiguous copy (`model/loader.contiguous_head_input`, what `load` sets up), in the same run.

Not a test: it prints figures. A batch of chat prompts of different lengths (left-padded, as steering batches them)
generates ``--tokens`` tokens greedily, both ways alternately over ``--rounds``; prints seconds per batch, the ratio,
and whether both ways produced the same tokens.

    python bench/head_input.py [--batch 32] [--tokens 48] [--threads 1] [--rounds 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from axwarehouse.model.chat import ChatFormat  # noqa: E402
from axwarehouse.model.loader import load, resolve_dtype  # noqa: E402
from axwarehouse.steering.generate import left_pad  # noqa: E402

TOPICS = ["rivers", "the moon", "bread", "chess", "volcanoes", "jazz", "bees", "glaciers"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="embedded:smollm2")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dtype = resolve_dtype("auto")
    lm = load(args.model, dtype)
    chat = ChatFormat.of(lm.tokenizer)
    prompts = [chat.prompt_ids(f"Tell me {'a little ' * (i % 5)}about {TOPICS[i % len(TOPICS)]}.")
               for i in range(args.batch)]
    inputs = left_pad(prompts, lm.tokenizer.pad_token_id)
    head = lm.model.get_output_embeddings()
    contiguous = type(head)
    kwargs = {"max_new_tokens": args.tokens, "min_new_tokens": args.tokens, "do_sample": False,
              "pad_token_id": lm.tokenizer.pad_token_id, "temperature": None, "top_p": None, "top_k": None}

    def run(cls: type) -> tuple[float, list]:
        head.__class__ = cls
        start = time.perf_counter()
        with torch.inference_mode():
            out = lm.model.generate(**inputs, **kwargs)
        return time.perf_counter() - start, out.tolist()

    run(contiguous)  # warm-up
    seconds: dict[str, list[float]] = {"strided (nn.Linear)": [], "contiguous": []}
    tokens = {}
    for _ in range(args.rounds):
        for name, cls in (("strided (nn.Linear)", torch.nn.Linear), ("contiguous", contiguous)):
            s, tokens[name] = run(cls)
            seconds[name].append(s)
    head.__class__ = contiguous
    base = min(seconds["strided (nn.Linear)"])
    print(f"{args.model}, {dtype}, {args.threads} thread(s): {args.batch} prompts x {args.tokens} new tokens "
          f"(prompt width {inputs['input_ids'].shape[1]})")
    for name, s in seconds.items():
        print(f"  head input {name:>20}: {min(s):6.2f} s per batch (best of {args.rounds}), "
              f"{base / min(s):.2f}x the strided baseline's speed")
    print(f"  same tokens both ways: {tokens['strided (nn.Linear)'] == tokens['contiguous']}")


if __name__ == "__main__":
    main()

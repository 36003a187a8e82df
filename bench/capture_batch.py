"""Activation capture speed by forward-batch size (``--batch-tokens``) on this machine's CPU.

Not a test: it prints figures. Tokenises the demo's examples (shipped Concept10: the first two concepts and the
shared negatives, every ``--every``-th example) as `axw activations` does, then runs the capture to layer 18 of the
embedded SmolLM2 once per batch budget, interleaved over ``--rounds`` so that drift of the machine's speed hits
every budget alike. Prints tokens/s per budget and its ratio to the baseline (the first budget, 4096: the default
before CPU got its own).

    python bench/capture_batch.py [--threads 1] [--budgets 4096,2048,1024,512] [--every 2] [--rounds 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from axwarehouse.catalog import Catalog  # noqa: E402
from axwarehouse.model.capture import capture, length_batches  # noqa: E402
from axwarehouse.model.chat import ChatFormat  # noqa: E402
from axwarehouse.model.loader import load, resolve_dtype  # noqa: E402
from axwarehouse.stages.demo import DEMO_DATA  # noqa: E402
from axwarehouse.stages.import_axbench import import_axbench  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="embedded:smollm2")
    ap.add_argument("--layer", type=int, default=18)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--budgets", default="4096,2048,1024,512")
    ap.add_argument("--every", type=int, default=2, help="use every N-th example")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    budgets = [int(b) for b in args.budgets.split(",")]

    with tempfile.TemporaryDirectory() as tmp:
        with Catalog(Path(tmp) / "catalog.duckdb") as cat:
            import_axbench(cat, DEMO_DATA, "concept10")
            rows = cat.sql("SELECT split, input, output FROM generations WHERE concept_set = 'concept10' AND "
                           "concept_id IN (-1, 0, 1) ORDER BY split, example_id").fetchall()
    dtype = resolve_dtype("auto")
    lm = load(args.model, dtype)
    chat = ChatFormat.of(lm.tokenizer)
    seqs = [chat.ids_for(s, i or "", o or "") for s, i, o in rows][::args.every]
    tokens = sum(len(s) for s in seqs)
    layers = lm.decoder_layers()
    print(f"{args.model} layer {args.layer}, {dtype}, {args.threads} thread(s): {len(seqs)} examples, {tokens} tokens")
    for _ in capture(lm.model, layers, args.layer, seqs[:8], lm.tokenizer.pad_token_id, 1024):
        pass  # warm-up
    seconds = {b: [] for b in budgets}
    for _ in range(args.rounds):
        for b in budgets:
            start = time.perf_counter()
            for _ in capture(lm.model, layers, args.layer, seqs, lm.tokenizer.pad_token_id, b, as_tensors=True):
                pass
            seconds[b].append(time.perf_counter() - start)
    base = tokens / min(seconds[budgets[0]])
    for b in budgets:
        batches = length_batches([len(s) for s in seqs], b)
        padded = sum(len(ix) * max(len(seqs[i]) for i in ix) for ix in batches) / tokens
        rate = tokens / min(seconds[b])
        print(f"  --batch-tokens {b:>5}: {rate:7.0f} tok/s (best of {args.rounds}), {rate / base:.2f}x the "
              f"{budgets[0]} baseline; {len(batches)} batches, padded/real tokens {padded:.3f}")


if __name__ == "__main__":
    main()

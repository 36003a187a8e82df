"""Ready for the first GPU: activation capture and steered generation per engine, in bf16, with the engines'
greedy equality checked on the device; exits 1 on any mismatch.

For each model (the embedded one, plus every ``--model``): load it in ``--dtype`` on ``--device``; capture layer L
activations of the chat prompts of ``--rows`` shipped instructions (tokens/s); steer ``--rows`` rows (random unit
directions x ``--magnitude`` x factors 0.4/1/2, temperature 1, ``--max-new-tokens``) through each engine
(generated tokens/s; ``vllm`` when vLLM is installed); then greedy-decode ``--check-rows`` rows for
``--check-tokens`` new tokens through ``hf`` and each other engine and compare. Equal tokens on every position pass; kernels of another device may round differently, so
``--min-same`` (default 0.95) of the positions equal still passes, with the count printed; less fails.

    python bench/gpu.py [--device cuda] [--dtype bfloat16] [--model SPEC ...] [--rows 60] [--max-new-tokens 128]
    python bench/gpu.py --device cpu --dtype float32 --rows 6 --max-new-tokens 16 --check-rows 4 --check-tokens 8
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from axwarehouse.model.capture import capture  # noqa: E402
from axwarehouse.model.chat import ChatFormat  # noqa: E402
from axwarehouse.model.info import model_info  # noqa: E402
from axwarehouse.model.loader import check_device, load, resolve_dtype  # noqa: E402
from axwarehouse.steering import GenRow, Steerer, generate_rows  # noqa: E402
from axwarehouse.steering.generate import ENGINES  # noqa: E402
from axwarehouse.steering.instructions import load_instructions  # noqa: E402
from bench.steer import greedy_agreement  # noqa: E402


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def steering_rows(lm, n: int, magnitude: float) -> list[GenRow]:
    """``n`` rows over the shipped instructions: 2 random unit directions x factors 0.4 / 1 / 2."""
    chat = ChatFormat.of(lm.tokenizer)
    texts = load_instructions().instructions
    rng = np.random.default_rng(0)
    dirs = [rng.standard_normal(lm.hidden_size).astype(np.float32) for _ in range(2)]
    dirs = [d / np.linalg.norm(d) for d in dirs]
    return [GenRow(tuple(chat.prompt_ids(texts[k % len(texts)])), dirs[k % 2], (0.4, 1.0, 2.0)[k % 3] * magnitude,
                   seed=k) for k in range(n)]


def check_model(spec: str, args) -> bool:
    """Print one model's figures; True when the engines agree."""
    info = model_info(spec)
    layer = info.check_layer(args.layer)
    lm = load(spec, resolve_dtype(args.dtype, args.device))
    lm.model.to(args.device)
    dtype = lm.dtype
    print(f"== {info.name} layer {layer}, {dtype} on {args.device}")
    rows = steering_rows(lm, args.rows, args.magnitude)
    seqs = [list(r.prompt_ids) for r in rows]
    _sync(args.device)
    t0 = time.perf_counter()
    for _ in capture(lm.model, lm.decoder_layers(), layer, seqs, lm.tokenizer.pad_token_id, as_tensors=True):
        pass
    _sync(args.device)
    dt = time.perf_counter() - t0
    print(f"capture: {sum(map(len, seqs)) / dt:,.0f} tokens/s ({len(seqs)} prompts)")
    steerer = Steerer(lm.model, layer)
    engines = [e for e in ENGINES if e != "vllm" or importlib.util.find_spec("vllm")]
    for engine in engines:
        generate_rows(lm, steerer, rows[:2], max_new_tokens=2, temperature=1.0, engine=engine)  # warm-up
        _sync(args.device)
        t0 = time.perf_counter()
        outs = generate_rows(lm, steerer, rows, max_new_tokens=args.max_new_tokens, temperature=1.0, engine=engine)
        _sync(args.device)
        dt = time.perf_counter() - t0
        n = sum(len(o.token_ids) for o in outs)
        print(f"steer {engine:10s}: {n / dt:,.1f} generated tokens/s ({n} tokens, {len(rows)} rows, {dt:.1f}s)")
    check = rows[: args.check_rows]
    ref = generate_rows(lm, steerer, check, max_new_tokens=args.check_tokens, temperature=0.0, engine="hf")
    ok = True
    for engine in [e for e in engines if e != "hf"]:
        new = generate_rows(lm, steerer, check, max_new_tokens=args.check_tokens, temperature=0.0, engine=engine)
        rows_same, same, positions = greedy_agreement(ref, new)
        share = same / max(positions, 1)
        ok &= share >= args.min_same
        print(f"greedy hf vs {engine}, first {args.check_tokens} new tokens: {rows_same}/{len(check)} rows "
              f"identical, {same}/{positions} positions ({share:.1%}) -> "
              f"{'OK' if share >= args.min_same else 'MISMATCH'}")
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--model", action="append", default=[], help="also check this model (repeatable)")
    ap.add_argument("--layer", type=int, default=None)
    ap.add_argument("--rows", type=int, default=60)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--magnitude", type=float, default=8.0)
    ap.add_argument("--check-rows", type=int, default=12)
    ap.add_argument("--check-tokens", type=int, default=32)
    ap.add_argument("--min-same", type=float, default=0.95)
    args = ap.parse_args()
    check_device(args.device)
    if args.device.startswith("cuda"):
        print(f"{torch.cuda.get_device_name()}; torch {torch.__version__}")
    results = [check_model(spec, args) for spec in ["embedded:smollm2", *args.model]]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())

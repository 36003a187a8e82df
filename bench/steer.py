"""Benchmark the steering half: batched steered generation vs a one-prompt-at-a-time loop, and the judge's calls/s
cold vs from the `llm_calls` cache.

Not a test: it prints figures. Every ratio is against a baseline measured in the same run on the same model:

* generation: the same (concept direction, factor, instruction) rows, the same seeds and the same code path
  (pyvene intervention, per-row seeded sampler); ``--batch-size`` rows per padded batch vs one row per
  ``generate`` call (how AxBench's scripts loop over prompts at small batch sizes). Tokens/s counts generated
  tokens up to end-of-turn. The one-at-a-time loop runs on the first ``--baseline-rows`` rows only (it is slow);
  both texts are compared on those rows (equal in greedy mode; with sampling they are equal too, since every row
  has its own generator).
* judge: ``--judge-ratings`` concept/instruction/fluency ratings by the embedded judge through the cached client,
  cold (model calls) then warm (a fresh client over the same catalog: every answer from `llm_calls`).

Directions are random unit vectors scaled like a DiffMean direction (magnitude ``--magnitude``): throughput does
not depend on what the direction means, and it keeps the benchmark free of the latent pipeline.

    python bench/steer.py [--model embedded:smollm2] [--layer L] [--concepts 4] [--factors 0.5,1,2,4]
                          [--instructions 4] [--max-new-tokens 64] [--batch-size 64] [--baseline-rows 16]
                          [--temperature 1.0] [--judge-ratings 24]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from axwarehouse.catalog import Catalog  # noqa: E402
from axwarehouse.lm.chat import ChatFormat  # noqa: E402
from axwarehouse.lm.info import model_info  # noqa: E402
from axwarehouse.lm.loader import load  # noqa: E402
from axwarehouse.steering import GenRow, Steerer, generate_rows  # noqa: E402
from axwarehouse.steering.instructions import load_instructions  # noqa: E402
from axwarehouse.steering.judge import CRITERIA, judge_prompt  # noqa: E402


def _rate(rows_out, seconds: float) -> tuple[int, float]:
    n = sum(len(o.token_ids) for o in rows_out)
    return n, n / seconds


def bench_generation(args, lm, layer: int) -> list:
    chat = ChatFormat.of(lm.tokenizer)
    instr = load_instructions()
    rng = np.random.default_rng(0)
    factors = [float(f) for f in args.factors.split(",")]
    rows = []
    for c in range(args.concepts):
        w = rng.standard_normal(lm.hidden_size).astype(np.float32)
        w /= np.linalg.norm(w)
        for input_id, iid, _split in instr.draw(c, args.instructions):
            ids = tuple(chat.prompt_ids(instr.instructions[iid]))
            for f in factors:
                rows.append(GenRow(ids, w, f * args.magnitude, seed=1000 * c + input_id))
    steerer = Steerer(lm.model, layer)
    print(f"rows: {args.concepts} concepts x {len(factors)} factors x {args.instructions} instructions = "
          f"{len(rows)}; max_new_tokens {args.max_new_tokens}; temperature {args.temperature}; "
          f"intervention via {steerer.backend}")
    generate_rows(lm, steerer, rows[:2], max_new_tokens=4, temperature=args.temperature, batch_size=2)  # warm-up
    t0 = time.perf_counter()
    batched = generate_rows(lm, steerer, rows, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                            batch_size=args.batch_size)
    t_b = time.perf_counter() - t0
    n_b, rate_b = _rate(batched, t_b)
    base_rows = rows[: args.baseline_rows]
    t0 = time.perf_counter()
    single = generate_rows(lm, steerer, base_rows, max_new_tokens=args.max_new_tokens,
                           temperature=args.temperature, batch_size=1)
    t_s = time.perf_counter() - t0
    n_s, rate_s = _rate(single, t_s)
    same = sum(a.token_ids == b.token_ids for a, b in zip(batched, single))
    print(f"batched sweep (batch {args.batch_size}):   {rate_b:8.1f} tok/s  ({n_b} tokens, {len(rows)} rows, "
          f"{t_b:.1f}s)")
    print(f"one-at-a-time loop (batch 1): {rate_s:8.1f} tok/s  ({n_s} tokens, {len(base_rows)} rows, {t_s:.1f}s)")
    print(f"speed-up batched / one-at-a-time: {rate_b / rate_s:.2f}x")
    print(f"identical outputs on the {len(base_rows)} shared rows: {same}/{len(base_rows)}")
    return batched


def bench_judge(args, outputs: list) -> None:
    from axwarehouse.llm import LLMClient, LLMRequest, ResponseCache, make_backend

    instr = load_instructions()
    reqs = []
    for k, o in enumerate(outputs[: max(1, args.judge_ratings // len(CRITERIA))]):
        for crit in CRITERIA:
            reqs.append(LLMRequest.user(judge_prompt(crit, "the ocean", instr.instructions[k % 100], o.text),
                                        temperature=0.7, max_tokens=args.judge_max_tokens, seed=k,
                                        purpose=f"judge_{crit}"))
    with tempfile.TemporaryDirectory() as tmp, Catalog(Path(tmp) / "catalog.duckdb") as cat:
        timings = []
        for label in ("cold", "warm"):
            with cat.run("bench-judge", {"label": label}) as run:
                cache = ResponseCache(cat, run, stage="judge")
                t0 = time.perf_counter()
                with LLMClient(make_backend(args.judge), cache, max_attempts=1) as client:
                    client.run(reqs, validate=lambda comp: (comp.text, None))
                    stats = client.stats
                dt = time.perf_counter() - t0
                cache.flush()
            timings.append(dt)
            print(f"judge {label}: {len(reqs)} ratings in {dt:.2f}s = {len(reqs) / dt:,.1f} ratings/s "
                  f"(model calls {stats.calls}, cache hits {stats.cache_hits})")
        print(f"judge cache speed-up (cold / warm time): {timings[0] / timings[1]:,.0f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="embedded:smollm2")
    ap.add_argument("--layer", type=int, default=None)
    ap.add_argument("--concepts", type=int, default=4)
    ap.add_argument("--factors", default="0.5,1,2,4")
    ap.add_argument("--instructions", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--baseline-rows", type=int, default=16)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--magnitude", type=float, default=8.0, help="a_c used for every concept")
    ap.add_argument("--judge", default="embedded:smollm2")
    ap.add_argument("--judge-ratings", type=int, default=24)
    ap.add_argument("--judge-max-tokens", type=int, default=64)
    args = ap.parse_args()
    info = model_info(args.model)
    layer = info.check_layer(args.layer)
    print(f"model {info.name} layer {layer}; torch threads {torch.get_num_threads()}; cpus {psutil.cpu_count()}; "
          f"load average {psutil.getloadavg()[0]:.1f}")
    t0 = time.perf_counter()
    lm = load(args.model)
    print(f"model load {time.perf_counter() - t0:.1f}s")
    outputs = bench_generation(args, lm, layer)
    if args.judge_ratings > 0:
        bench_judge(args, outputs)


if __name__ == "__main__":
    main()

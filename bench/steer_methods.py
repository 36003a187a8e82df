"""Steering methods on one warehouse: train the steering methods, steer, judge, print the steering leaderboard.

Not a test: it prints figures (a ``TIME`` line per step). Same small protocol as `axw demo` (factors 0.5/1/2,
4 instructions — 2 select the factor, 2 test it — 48 new tokens, embedded judge) on the first concepts. The
steering-only methods are trained with fewer epochs than AxBench for CPU time (``SETTINGS``, part of their config
hash). Run on a warehouse where `axw demo` (or activations at the default layer) already ran:

    python bench/steer_methods.py CATALOG [--concepts 0,1]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from axwarehouse.catalog import Catalog  # noqa: E402
from axwarehouse.display import render  # noqa: E402
from axwarehouse.judging.config import JudgeConfig  # noqa: E402
from axwarehouse.stages.judge import run_judge  # noqa: E402
from axwarehouse.stages.latent import LatentConfig, run_latent  # noqa: E402
from axwarehouse.stages.leaderboard import steering_leaderboard  # noqa: E402
from axwarehouse.stages.steer import SteerConfig, run_steer  # noqa: E402
from axwarehouse.stages.demo import (DEMO_FACTORS, DEMO_INSTRUCTIONS, DEMO_JUDGE_MAX_TOKENS,  # noqa: E402
                         DEMO_MAX_NEW_TOKENS)
from axwarehouse.stages.train import TrainConfig, run_train  # noqa: E402

SETTINGS = ("loreft.epochs=3", "lora.epochs=3", "sft.epochs=1")  # AxBench: 24 / 24 / 8
METHODS = ("diffmean", "reft-r1", "ssv", "loreft", "lora", "sft", "prompt")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("catalog", type=Path)
    ap.add_argument("--concepts", default="0,1")
    args = ap.parse_args()
    concepts = tuple(int(c) for c in args.concepts.split(","))
    with Catalog(args.catalog) as cat:
        for m in ("diffmean", "reft-r1", "ssv", "loreft", "lora", "sft"):
            t = time.perf_counter()
            print(run_train(cat, TrainConfig("concept10", methods=(m,), concepts=concepts, overrides=SETTINGS))
                  .summary(), flush=True)
            print(f"TIME train {m}: {time.perf_counter() - t:.1f}s", flush=True)
            if m in ("diffmean", "reft-r1", "ssv"):  # their steering magnitude is their max latent score
                t = time.perf_counter()
                run_latent(cat, LatentConfig("concept10", methods=(m,)))
                print(f"TIME latent {m}: {time.perf_counter() - t:.1f}s", flush=True)
        t = time.perf_counter()
        print(run_steer(cat, SteerConfig("concept10", methods=METHODS, factors=DEMO_FACTORS, concepts=concepts,
                                         n_inputs=DEMO_INSTRUCTIONS, max_new_tokens=DEMO_MAX_NEW_TOKENS,
                                         overrides=SETTINGS), progress=False).summary(), flush=True)
        print(f"TIME steer: {time.perf_counter() - t:.1f}s", flush=True)
        t = time.perf_counter()
        print(run_judge(cat, JudgeConfig(judge="embedded:smollm2", concept_set="concept10", methods=METHODS,
                                         max_tokens=DEMO_JUDGE_MAX_TOKENS), progress=False).summary(), flush=True)
        print(f"TIME judge: {time.perf_counter() - t:.1f}s", flush=True)
        print(render(steering_leaderboard(cat, "concept10"), "table"))


if __name__ == "__main__":
    main()

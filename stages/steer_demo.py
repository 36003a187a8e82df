"""The steering part of `axw demo`: DiffMean and the prompt baseline on Concept10's concepts over a factor sweep,
rated by the offline proxy judge, then the steering leaderboard and win rates vs the prompt baseline.

Sized to fit, with the latent demo, in < 10 minutes on 2 CPU cores: all 10 concepts, but the instruction and
token counts are the demo's, not AxBench's (10 instructions, 128 new tokens); the factors are a subset spanning
AxBench's list (0.2 … 5.0), wide enough to show the trade-off (concept up to factor 2–3, fluency down all the way,
docs/proxy-judge.md). The proxy judge (:mod:`axwarehouse.steering.proxy_judge`) measures instead of asking an LLM,
so it is cheap enough for the sweep; the prompt baseline's steering prompts are still written by the embedded LLM.
Run after the latent demo: DiffMean's magnitude a_c is its max latent score, so `latent_scores` must exist. Every
step is incremental: a second demo run reuses everything.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from axwarehouse.catalog import Catalog
from axwarehouse.display import render

DEMO_CONCEPTS = tuple(range(10))  # all of Concept10: fits the 10-minute budget (BENCHMARKS.md)
DEMO_FACTORS = (0.2, 0.6, 1.0, 2.0, 3.0, 5.0)  # spans AxBench's 0.2 … 5.0
DEMO_INSTRUCTIONS = 4  # 2 select the factor, 2 test it
DEMO_MAX_NEW_TOKENS = 48
DEMO_JUDGE = "proxy"
DEMO_PROMPT_LLM = "embedded:smollm2"  # writes the prompt baseline's steering prompts
DEMO_JUDGE_MAX_TOKENS = 32  # only used when an embedded LLM judge is chosen instead


def run_steering_demo(cat: Catalog, model: str, layer: int | None, echo: Callable[[str], None] = print,
                      concept_set: str = "concept10", judge: str = DEMO_JUDGE, progress: bool = True,
                      concepts: tuple[int, ...] = DEMO_CONCEPTS) -> None:
    """steer (diffmean + prompt) → judge → steering leaderboard + win rates, printing what each step did."""
    from stages.judge import JudgeConfig, run_judge
    from stages.leaderboard import failures_note, steering_leaderboard, winrate_table
    from stages.steer import SteerConfig, run_steer

    t0 = time.perf_counter()
    cfg = SteerConfig(concept_set=concept_set, methods=("diffmean", "prompt"), model=model, layer=layer,
                      factors=DEMO_FACTORS, concepts=concepts, n_inputs=DEMO_INSTRUCTIONS,
                      max_new_tokens=DEMO_MAX_NEW_TOKENS, llm=DEMO_PROMPT_LLM)
    echo("[steer] " + run_steer(cat, cfg, progress=progress).summary().replace("\n", "\n        "))
    jcfg = JudgeConfig(judge=judge, concept_set=concept_set, methods=("diffmean", "prompt"),
                       max_tokens=DEMO_JUDGE_MAX_TOKENS)
    echo("[judge] " + run_judge(cat, jcfg, progress=progress).summary().replace("\n", "\n        "))
    echo(f"\nsteering leaderboard ({time.perf_counter() - t0:.0f}s for steering + judging; "
         f"{len(concepts)} concepts, judge {judge}, factors {', '.join(map(str, DEMO_FACTORS))}, {DEMO_INSTRUCTIONS} "
         f"instructions, {DEMO_MAX_NEW_TOKENS} new tokens):")
    echo(render(steering_leaderboard(cat, concept_set), "table"))
    echo(failures_note(cat, concept_set))
    echo("\nwin rate vs the prompt baseline (test split, each method at its best factor):")
    echo(render(winrate_table(cat, "prompt", concept_set), "table"))

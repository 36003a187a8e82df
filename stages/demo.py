"""`axw demo`: the benchmark end to end on shipped data and the embedded model, in three parts.

* **latent** (:func:`run_demo`): import-axbench → activations → train → latent → leaderboard on the shipped
  Concept10 release.
* **steering** (:func:`run_steering_demo`, after the latent part): DiffMean and the prompt baseline on Concept10's
  concepts over a factor sweep, rated by the offline proxy judge, then the steering leaderboard and win rates vs the
  prompt baseline. Sized to fit, with the latent part, in < 10 minutes on 2 CPU cores: all 10 concepts, but the
  instruction and token counts are the demo's, not AxBench's (10 instructions, 128 new tokens); the factors are a
  subset spanning AxBench's list (0.2 … 5.0), wide enough to show the trade-off (concept up to factor 2–3, fluency
  down all the way, docs/proxy-judge.md). The proxy judge (:mod:`axwarehouse.judging.proxy_measures`) measures instead
  of asking an LLM, so it is cheap enough for the sweep; the prompt baseline's steering prompts are still written by
  the embedded LLM. DiffMean's magnitude a_c is its max latent score, so `latent_scores` must exist.
* **generated data** (:func:`run_generate_demo`, ``axw demo --generate``): concepts import (3 shipped concepts) →
  generate (embedded SmolLM2 as LLM and target, small counts) → activations → train → latent → leaderboard. Counts
  are small on purpose (a 135M model on CPU writes a few tokens per second per sequence); the point is the plumbing,
  not the numbers.

Every step is the same function the individual commands call, so a second demo run reuses everything and finishes
in seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from axwarehouse import DATA_DIR
from axwarehouse.catalog import Catalog
from axwarehouse.display import render
from axwarehouse.model.loader import DEFAULT_MODEL

_DATA = DATA_DIR
DEMO_DATA = _DATA / "axbench-concept10" / "prod_2b_l10_v1"
DEMO_CONCEPT_SET = "concept10"
DEMO_METHODS = ("diffmean", "pca", "lat", "probe")

# the steering part
STEER_CONCEPTS = tuple(range(10))  # all of Concept10: fits the 10-minute budget (BENCHMARKS.md)
DEMO_FACTORS = (0.2, 0.6, 1.0, 2.0, 3.0, 5.0)  # spans AxBench's 0.2 … 5.0
DEMO_INSTRUCTIONS = 4  # 2 select the factor, 2 test it
DEMO_MAX_NEW_TOKENS = 48
DEMO_JUDGE = "proxy"
DEMO_PROMPT_LLM = "embedded:smollm2"  # writes the prompt baseline's steering prompts
DEMO_JUDGE_MAX_TOKENS = 32  # only used when an embedded LLM judge is chosen instead

# the generated-data part
GENERATE_CONCEPTS = _DATA / "demo" / "generate_concepts.txt"
DEMO_SET = "demo-generated"
# small counts: ~100 LLM calls with the embedded model; temperature 0.7 keeps a 135M model's text readable
DEMO_GENERATE = dict(n_train=8, n_eval=6, output_length=48, max_contrast=2, max_attempts=2, temperature=0.7)


@dataclass(frozen=True)
class DemoConfig:
    model: str = DEFAULT_MODEL
    layer: int | None = None
    methods: tuple[str, ...] = ()
    concept_set: str = DEMO_CONCEPT_SET
    data_dir: Path = DEMO_DATA
    concepts: int | None = None  # only the first N concepts of the set (a quick check; a later full run adds the rest)

    def concept_ids(self) -> tuple[int, ...]:
        """The concepts this run covers: the first ``concepts`` ids, or () for all of them."""
        return () if not self.concepts or self.concepts >= 10 else tuple(range(self.concepts))


def run_demo(cat: Catalog, cfg: DemoConfig, echo: Callable[[str], None] = print) -> None:
    """Run every latent stage on the demo data, printing what each did and the leaderboard."""
    from axwarehouse.stages.activations import ActivationsConfig, run_activations
    from axwarehouse.stages.import_axbench import import_axbench
    from axwarehouse.stages.latent import LatentConfig, run_latent
    from axwarehouse.stages.leaderboard import latent_leaderboard
    from axwarehouse.stages.train import TrainConfig, run_train

    from axwarehouse.errors import AxwError
    from axwarehouse.model.loader import resolve

    methods = cfg.methods or DEMO_METHODS
    t0 = time.perf_counter()
    if cfg.concepts is not None and not 2 <= cfg.concepts <= 10:
        raise AxwError(f"--concepts must be 2..10 (the steering part steers the first of them), got {cfg.concepts}")
    resolve(cfg.model)  # an embedded model not cached yet is fetched (or its one-line error raised) before any work
    concept_set, ids = cfg.concept_set, cfg.concept_ids()
    # --concepts N is a prefix of the full demo, not another concept set: the whole release is imported (seconds),
    # the stages run on the first N concepts (and the shared negatives), and a later full run computes only the rest
    out = import_axbench(cat, cfg.data_dir, concept_set)
    echo(f"[1/4] import: concept set {concept_set}: "
         + ("already imported" if out["skipped"] else f"{out['concepts']} concepts, {out['generations']} generations")
         + (f" (this run: concepts {ids[0]}..{ids[-1]} and the shared negatives)" if ids else ""))
    acts = ActivationsConfig(concept_set, cfg.model, cfg.layer, concepts=(-1, *ids) if ids else ())
    echo("[2/4] " + run_activations(cat, acts).summary())
    echo("[3/4] " + run_train(cat, TrainConfig(concept_set, cfg.model, cfg.layer, methods, concepts=ids)).summary()
         .replace("\n", "\n      "))
    echo("[4/4] " + run_latent(cat, LatentConfig(concept_set, cfg.model, cfg.layer, methods, concepts=ids)).summary()
         .replace("\n", "\n      "))
    echo(f"\nlatent leaderboard ({time.perf_counter() - t0:.0f}s end to end):")
    echo(render(latent_leaderboard(cat, concept_set), "table"))


def run_steering_demo(cat: Catalog, model: str, layer: int | None, echo: Callable[[str], None] = print,
                      concept_set: str = "concept10", judge: str = DEMO_JUDGE, progress: bool = True,
                      concepts: tuple[int, ...] = STEER_CONCEPTS) -> None:
    """steer (diffmean + prompt) → judge → steering leaderboard + win rates, printing what each step did."""
    from axwarehouse.judging.config import JudgeConfig
    from axwarehouse.stages.judge import run_judge
    from axwarehouse.stages.leaderboard import failures_note, steering_leaderboard, winrate_table
    from axwarehouse.stages.steer import SteerConfig, run_steer

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


def run_generate_demo(cat: Catalog, model: str = DEFAULT_MODEL, layer: int | None = None,
                      echo: Callable[[str], None] = print, methods: tuple[str, ...] = DEMO_METHODS,
                      progress: bool = True, **overrides: object) -> None:
    """Generate data for the demo concepts with the embedded backend, then run the latent benchmark on it.

    ``overrides`` replace :data:`DEMO_GENERATE` settings or pick another LLM (``llm=``, ``llm_base_url=``)."""
    from axwarehouse.stages.activations import ActivationsConfig, run_activations
    from axwarehouse.stages.concepts import import_concepts
    from axwarehouse.stages.generate import GenerateConfig, run_generate
    from axwarehouse.stages.latent import LatentConfig, run_latent
    from axwarehouse.stages.leaderboard import latent_leaderboard
    from axwarehouse.stages.train import TrainConfig, run_train

    t0 = time.perf_counter()
    out = import_concepts(cat, GENERATE_CONCEPTS, DEMO_SET)
    echo(f"[1/5] concepts: {DEMO_SET}: " + ("already imported" if out["skipped"] else f"{out['concepts']} concepts"))
    settings = {"llm": "embedded:smollm2", **DEMO_GENERATE, **overrides}
    cfg = GenerateConfig(concept_set=DEMO_SET, target_model=model, **settings)
    echo("[2/5] " + run_generate(cat, cfg, progress=progress, echo=echo).summary())
    echo("[3/5] " + run_activations(cat, ActivationsConfig(DEMO_SET, model, layer)).summary())
    echo("[4/5] " + run_train(cat, TrainConfig(DEMO_SET, model, layer, methods)).summary().replace("\n", "\n      "))
    echo("[5/5] " + run_latent(cat, LatentConfig(DEMO_SET, model, layer, methods)).summary()
         .replace("\n", "\n      "))
    echo(f"\nlatent leaderboard on generated data ({time.perf_counter() - t0:.0f}s end to end):")
    echo(render(latent_leaderboard(cat, DEMO_SET), "table"))

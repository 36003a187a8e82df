"""`axw demo --generate`: a few concepts generated end to end with the embedded LLM, then the latent benchmark.

concepts import (3 shipped concepts) → generate (embedded SmolLM2 as LLM and target, small counts) → activations →
train → latent → leaderboard. Every step is the stage function the CLI calls, so a second run reuses everything.
Counts are small on purpose (a 135M model on CPU writes a few tokens per second per sequence); the point is the
plumbing, not the numbers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from axwarehouse.catalog import Catalog
from axwarehouse.display import render
from axwarehouse.lm.loader import DEFAULT_MODEL

DEMO_CONCEPTS = Path(__file__).resolve().parents[1] / "axwarehouse" / "data" / "demo" / "generate_concepts.txt"
DEMO_SET = "demo-generated"
DEMO_METHODS = ("diffmean", "pca", "lat", "probe")
# small counts: ~100 LLM calls with the embedded model; temperature 0.7 keeps a 135M model's text readable
DEMO_GENERATE = dict(n_train=8, n_eval=6, output_length=48, max_contrast=2, max_attempts=2, temperature=0.7)


def run_generate_demo(cat: Catalog, model: str = DEFAULT_MODEL, layer: int | None = None,
                      echo: Callable[[str], None] = print, methods: tuple[str, ...] = DEMO_METHODS,
                      progress: bool = True, **overrides: object) -> None:
    """Generate data for the demo concepts with the embedded backend, then run the latent benchmark on it.

    ``overrides`` replace :data:`DEMO_GENERATE` settings or pick another LLM (``llm=``, ``llm_base_url=``)."""
    from stages.activations import ActivationsConfig, run_activations
    from stages.concepts import import_concepts
    from stages.generate import GenerateConfig, run_generate
    from stages.latent import LatentConfig, run_latent
    from stages.leaderboard import latent_leaderboard
    from stages.train import TrainConfig, run_train

    t0 = time.perf_counter()
    out = import_concepts(cat, DEMO_CONCEPTS, DEMO_SET)
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

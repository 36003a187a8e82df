"""`axw demo`: the latent benchmark end to end on the shipped Concept10 data and the embedded model.

import-axbench → activations → train → latent → leaderboard. Every step is the same function the individual
commands call, so a second demo run reuses everything and finishes in seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from axwarehouse.catalog import Catalog
from axwarehouse.display import render
from axwarehouse.lm.loader import DEFAULT_MODEL

DEMO_DATA = Path(__file__).resolve().parents[1] / "axwarehouse" / "data" / "axbench-concept10" / "prod_2b_l10_v1"
DEMO_CONCEPT_SET = "concept10"
DEMO_METHODS = ("diffmean", "pca", "lat", "probe")


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
    from stages.activations import ActivationsConfig, run_activations
    from stages.import_axbench import import_axbench
    from stages.latent import LatentConfig, run_latent
    from stages.leaderboard import latent_leaderboard
    from stages.train import TrainConfig, run_train

    from axwarehouse.errors import AxwError
    from axwarehouse.lm.loader import resolve

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

"""`axw demo`: the latent benchmark end to end on the shipped Concept10 data and the embedded model.

import-axbench → activations → train → latent → leaderboard. Every step is the same function the individual
commands call, so a second demo run reuses everything and finishes in seconds.
"""

from __future__ import annotations

import json
import tempfile
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
    concepts: int | None = None  # only the first N concepts (a quick check; concept set concept10-firstN)

    def subset_name(self) -> str:
        return self.concept_set if not self.concepts or self.concepts >= 10 else f"{self.concept_set}-first{self.concepts}"


def subset_release(src: Path, dest: Path, n: int) -> Path:
    """The first ``n`` concepts of the AxBench release in ``src`` written to ``dest`` in the same layout: their
    metadata, positives and latent-eval rows, and every genre negative (they are shared by all concepts)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    meta = (src / "generate" / "metadata.jsonl").read_text().splitlines()
    keep = [json.loads(line) for line in meta if line.strip()][:n]
    ids = [m["concept_id"] for m in keep]
    (dest / "generate").mkdir(parents=True)
    (dest / "inference").mkdir()
    (dest / "generate" / "metadata.jsonl").write_text("".join(json.dumps(m) + "\n" for m in keep))
    for part, name, extra in (("generate", "train_data", [-1]), ("inference", "latent_eval_data", [])):
        table = pq.read_table(src / part / f"{name}.parquet")
        pq.write_table(table.filter(pc.is_in(table["concept_id"], value_set=pa.array(ids + extra, pa.int64()))),
                       dest / part / f"{name}.parquet")
    return dest


def run_demo(cat: Catalog, cfg: DemoConfig, echo: Callable[[str], None] = print) -> None:
    """Run every latent stage on the demo data, printing what each did and the leaderboard."""
    from stages.activations import ActivationsConfig, run_activations
    from stages.import_axbench import import_axbench
    from stages.latent import LatentConfig, run_latent
    from stages.leaderboard import latent_leaderboard
    from stages.train import TrainConfig, run_train

    from axwarehouse.lm.loader import resolve

    from axwarehouse.errors import AxwError
    from axwarehouse.lm.loader import resolve

    methods = cfg.methods or DEMO_METHODS
    t0 = time.perf_counter()
    if cfg.concepts is not None and not 2 <= cfg.concepts <= 10:
        raise AxwError(f"--concepts must be 2..10 (the steering part steers the first of them), got {cfg.concepts}")
    resolve(cfg.model)  # an embedded model not cached yet is fetched (or its one-line error raised) before any work
    concept_set = cfg.subset_name()
    if concept_set == cfg.concept_set:
        out = import_axbench(cat, cfg.data_dir, concept_set)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            out = import_axbench(cat, subset_release(cfg.data_dir, Path(tmp) / cfg.data_dir.name, cfg.concepts),
                                 concept_set)
    echo(f"[1/4] import: concept set {concept_set}: "
         + ("already imported" if out["skipped"] else f"{out['concepts']} concepts, {out['generations']} generations"))
    echo("[2/4] " + run_activations(cat, ActivationsConfig(concept_set, cfg.model, cfg.layer)).summary())
    echo("[3/4] " + run_train(cat, TrainConfig(concept_set, cfg.model, cfg.layer, methods)).summary()
         .replace("\n", "\n      "))
    echo("[4/4] " + run_latent(cat, LatentConfig(concept_set, cfg.model, cfg.layer, methods)).summary()
         .replace("\n", "\n      "))
    echo(f"\nlatent leaderboard ({time.perf_counter() - t0:.0f}s end to end):")
    echo(render(latent_leaderboard(cat, concept_set), "table"))

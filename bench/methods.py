"""Benchmark every latent method: train + score seconds per method on the shipped Concept10 data.

Not a test: it prints figures. It imports the data into a fresh temporary catalog, captures activations once (the
shared input of all methods), trains the TopK SAE, then times `train` and `latent` per method. The baseline measured
in the same run is DiffMean (closed form on cached activations): every other method's time is also given as a
multiple of DiffMean's.

    python bench/methods.py [--concepts 3] [--model embedded:smollm2] [--layer L] [--methods all]
                            [--set ig.steps=8 ...] [--keep DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from axwarehouse.catalog import Catalog  # noqa: E402
from axwarehouse.methods import method_names  # noqa: E402
from axwarehouse.stages.activations import ActivationsConfig, run_activations  # noqa: E402
from axwarehouse.stages.demo import DEMO_DATA  # noqa: E402
from axwarehouse.stages.import_axbench import import_axbench  # noqa: E402
from axwarehouse.stages.latent import LatentConfig, run_latent  # noqa: E402
from axwarehouse.stages.sae import SaeTrainConfig, run_sae_train  # noqa: E402
from axwarehouse.stages.train import TrainConfig, run_train  # noqa: E402


def subset_release(dst: Path, n: int) -> Path:
    """The first n concepts of the shipped release (all shared negatives kept)."""
    import json

    import polars as pl

    (dst / "generate").mkdir(parents=True, exist_ok=True)  # rewritten identically when --keep reuses a folder
    (dst / "inference").mkdir(exist_ok=True)
    meta = (DEMO_DATA / "generate" / "metadata.jsonl").read_text().splitlines()[:n]
    ids = [json.loads(m)["concept_id"] for m in meta]
    (dst / "generate" / "metadata.jsonl").write_text("\n".join(meta) + "\n")
    train = pl.read_parquet(DEMO_DATA / "generate" / "train_data.parquet")
    train.filter(pl.col("concept_id").is_in([-1, *ids])).write_parquet(dst / "generate" / "train_data.parquet")
    ev = pl.read_parquet(DEMO_DATA / "inference" / "latent_eval_data.parquet")
    ev.filter(pl.col("concept_id").is_in(ids)).write_parquet(dst / "inference" / "latent_eval_data.parquet")
    return dst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concepts", type=int, default=10)
    ap.add_argument("--model", default="embedded:smollm2")
    ap.add_argument("--layer", type=int, default=None)
    ap.add_argument("--methods", default="all")
    ap.add_argument("--set", dest="settings", action="append", default=[])
    ap.add_argument("--keep", type=Path, default=None, help="Keep (and reuse) the catalog in this folder.")
    ap.add_argument("--model-concepts", type=int, default=None,
                    help="Train methods that run the model (ReFT-r1, SSV, IG, IxG) on the first N concepts only.")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="axw-bench-methods-")) if args.keep is None else args.keep
    tmp.mkdir(parents=True, exist_ok=True)
    release = DEMO_DATA if args.concepts >= 10 else subset_release(tmp / "release", args.concepts)
    cs = "concept10" if args.concepts >= 10 else f"concept10-first{args.concepts}"
    names = method_names([m.strip() for m in args.methods.split(",")], evaluation="latent")
    names = ["diffmean"] + [n for n in names if n != "diffmean"]
    with Catalog(tmp / "catalog.duckdb") as cat:
        import_axbench(cat, release, cs)
        t = time.perf_counter()
        print(run_activations(cat, ActivationsConfig(cs, args.model, args.layer)).summary(), flush=True)
        print(f"activations: {time.perf_counter() - t:.1f}s", flush=True)
        t = time.perf_counter()
        print(run_sae_train(cat, SaeTrainConfig(cs, args.model, args.layer)), flush=True)
        sae_s = time.perf_counter() - t
        rows = []
        for name in names:
            t = time.perf_counter()
            from axwarehouse.methods import get

            limit = ()
            if args.model_concepts and "model" in get(name).needs:
                limit = tuple(r[0] for r in cat.sql("SELECT concept_id FROM concepts WHERE concept_set = ? ORDER BY 1 "
                                                    "LIMIT ?", [cs, args.model_concepts]).fetchall())
            tr = run_train(cat, TrainConfig(cs, args.model, args.layer, (name,), concepts=limit,
                                            overrides=tuple(args.settings)))
            train_s = time.perf_counter() - t
            if name in tr.unavailable:
                print(f"{name}: skipped ({tr.unavailable[name]})", flush=True)
                continue
            t = time.perf_counter()
            run_latent(cat, LatentConfig(cs, args.model, args.layer, (name,), overrides=tuple(args.settings)))
            latent_s = time.perf_counter() - t
            rows.append((name, train_s, latent_s))
            print(f"{name}: train {train_s:.1f}s, latent {latent_s:.1f}s", flush=True)
        lb = {m: (a, n) for m, a, n in cat.sql("SELECT method, mean_auroc, n_concepts FROM latent_leaderboard "
                                               "WHERE concept_set = ?", [cs]).fetchall()}
    base = rows[0][1] + rows[0][2]
    if base < 0.5:  # DiffMean was already in a kept catalog: no baseline in this run
        print("\nDiffMean was already trained and scored in this catalog (--keep): ratios need a fresh catalog")
        base = float("nan")
    print(f"\n{cs}, {args.model}, settings {args.settings or 'defaults'}; SAE training {sae_s:.1f}s")
    print(f"{'method':<10} {'train s':>9} {'latent s':>9} {'total/diffmean':>15} {'mean AUROC':>11} {'concepts':>9}")
    for name, tr_s, la_s in sorted(rows, key=lambda r: -(lb.get(r[0], (0, 0))[0] or 0)):
        auc, n = lb.get(name, (float("nan"), 0))
        print(f"{name:<10} {tr_s:>9.1f} {la_s:>9.1f} {(tr_s + la_s) / base:>15.1f} {auc:>11.3f} {n:>9}")
    print(f"\ncatalog kept at {tmp}" if args.keep else "")


if __name__ == "__main__":
    main()

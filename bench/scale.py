"""Scale benchmark: the latent half on synthetic Concept10/100/500-sized warehouses at d = 2304 (gemma-2-2b's width).

Not a test: it prints figures. Per size N, with AxBench's example counts — 72 positives per concept and 72 shared
negatives per genre (3 genres) for training; 36 positives, 36 negatives and 5 hard negatives per concept for latent
eval — synthetic activations (Gaussian noise plus a concept direction on positives' response tokens) are written
through the real activation writer (``axwarehouse.stages.activations.activation_rows`` + ``Run.write``; no model runs), then
``train`` DiffMean/PCA/LAT/Probe and ``latent`` run as the stages do, and the AUROC views are queried.

Printed per size: disk bytes per token of the activation store (vs 2·d, bfloat16's floor), peak RSS of the
train+latent process, seconds per concept (train + latent, all methods; wall clock, and the process's CPU seconds,
which other processes on a shared machine disturb less; and the slope between sizes, the seconds each *added*
concept costs, free of the per-process fixed cost that total/N spreads over few concepts at small sizes), and the
time to answer
``SELECT * FROM latent_leaderboard`` on a freshly opened catalog. Each phase runs in its own process so the peak RSS
is that of train+latent alone.

AxBench's examples have ~160 tokens; at 500 concepts that is ~55 GB of bfloat16 activations, more than this machine
may use, so ``--tokens`` (default 40) shortens every example — the number of examples, and so the per-concept work
pattern, is AxBench's. The warehouses are deleted after measuring unless ``--keep``.

    python bench/scale.py [--sizes 10,100,500] [--tokens 40] [--d 2304] [--dir /work/scale-bench]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CS = "synthetic"
LAYER = 10
GENRES = ("text", "code", "math")
N_POS, N_SHARED, N_EVAL, N_HARD = 72, 72, 36, 5  # AxBench's counts (per concept; shared per genre)
PREFIX = 4  # chat-prefix tokens per example (never scored)


class _Tokens:
    """Token strings for the writer (there is no tokenizer: the activations are synthetic)."""

    @staticmethod
    def convert_ids_to_tokens(ids: list[int]) -> list[str]:
        return [f"t{i}" for i in ids]


def _model_dir(root: Path, d: int) -> Path:
    """A config-only model folder (no weights): the stages read its width and layer count, never its weights."""
    import transformers

    folder = root / "gemma2-2b-shape"
    if not (folder / "config.json").exists():
        transformers.Gemma2Config(hidden_size=d, num_hidden_layers=26, intermediate_size=9216, num_attention_heads=8,
                                  num_key_value_heads=4, head_dim=256, vocab_size=256000).save_pretrained(folder)
    return folder


def _examples(n: int) -> list[tuple[str, int, int, str, str]]:
    """(split, example_id, owner concept, category, genre) of every example."""
    rows, ex = [], 0
    for g in GENRES:
        for _ in range(N_SHARED):
            rows.append(("train", ex, -1, "negative", g))
            ex += 1
    for c in range(n):
        g = GENRES[c % len(GENRES)]
        for _ in range(N_POS):
            rows.append(("train", ex, c, "positive", g))
            ex += 1
        for cat, k in (("positive", N_EVAL), ("negative", N_EVAL), ("hard_negative", N_HARD)):
            for _ in range(k):
                rows.append(("latent_eval", ex, c, cat, g))
                ex += 1
    return rows


def write_phase(root: Path, n: int, d: int, tokens: int) -> dict:
    from axwarehouse.catalog import Catalog
    from axwarehouse.model.info import model_info
    from axwarehouse.stages.activations import activation_rows

    import torch

    model = str(_model_dir(root.parent, d))
    info = model_info(model)
    rows = _examples(n)
    none = [None] * len(rows)
    started = time.perf_counter()
    with Catalog(root / "catalog.duckdb") as cat:
        with cat.run("import_synthetic", {"n": n, "d": d, "tokens": tokens}) as run:
            run.write("concepts", pa.table({
                "concept_set": [CS] * n, "concept_id": pa.array(range(n), pa.int64()),
                "concept": [f"synthetic concept {c}" for c in range(n)],
                "genre": [GENRES[c % 3] for c in range(n)], "genres": [[GENRES[c % 3]] for c in range(n)],
                "ref": [None] * n, "sae_id": pa.nulls(n, pa.int64()), "source": ["bench/scale.py"] * n,
                "source_hash": ["synthetic"] * n}))
            run.write("generations", pa.table({
                "concept_set": [CS] * len(rows), "split": [r[0] for r in rows],
                "example_id": pa.array([r[1] for r in rows], pa.int64()),
                "concept_id": pa.array([r[2] for r in rows], pa.int64()), "category": [r[3] for r in rows],
                "genre": [r[4] for r in rows], "input": ["synthetic instruction"] * len(rows),
                "output": ["synthetic response"] * len(rows), "output_concept": none, "dataset_category": none,
                "source": ["bench/scale.py"] * len(rows), "generator_model": none, "sae_link": none,
                "sae_id": pa.nulls(len(rows), pa.int64())}))
        meta = {"model": info.name, "layer": LAYER, "concept_set": CS}
        gen = torch.Generator().manual_seed(0)
        directions = {}
        with cat.run("activations", {"bench": "scale", "model": info.name, "layer": LAYER}) as run:
            by_owner: dict[int, list] = {}
            for r in rows:
                by_owner.setdefault(r[2], []).append(r)
            for owner, mine in by_owner.items():  # one concept at a time: the writer's memory stays per concept
                if owner >= 0 and owner not in directions:
                    u = torch.randn(d, generator=gen)
                    directions[owner] = u / u.norm()
                batch = []
                for split, ex, c, category, _g in mine:
                    acts = torch.randn(tokens, d, generator=gen)
                    if category == "positive":
                        acts[PREFIX:] += 2.0 * directions[c]
                    batch.append((split, ex, c, list(range(tokens)), acts))
                for k in range(0, len(batch), 64):
                    table = activation_rows(meta, _Tokens, PREFIX, batch[k: k + 64], "bfloat16")
                    run.write("activations", table.append_column("config_hash",
                                                                 pa.array(["synthetic"] * table.num_rows)))
    act_dir = root / "warehouse" / "activations"
    disk = sum(p.stat().st_size for p in act_dir.rglob("*.parquet"))
    return {"n": n, "tokens": len(rows) * tokens, "disk_bytes": disk, "write_s": time.perf_counter() - started}


def run_phase(root: Path, n: int, d: int, methods: tuple[str, ...], overrides: tuple[str, ...]) -> dict:
    import duckdb  # noqa: F401  (imported before timing)

    from axwarehouse.catalog import Catalog
    from axwarehouse.stages.latent import LatentConfig, run_latent
    from axwarehouse.stages.train import TrainConfig, run_train

    from axwarehouse.model.info import model_info
    from axwarehouse.methods import get, method_names

    model = str(_model_dir(root.parent, d))
    model_info(model)
    for name in method_names(list(methods)):  # imports and registry discovery happen before the clock starts
        get(name)
    import torch

    torch.optim.AdamW(torch.nn.Linear(1, 1).parameters())  # the first optimizer imports torch._dynamo (slow)
    try:
        import pandas  # noqa: F401  (imported by DuckDB's first result conversion)
    except ImportError:
        pass

    def cpu() -> float:
        use = resource.getrusage(resource.RUSAGE_SELF)
        return use.ru_utime + use.ru_stime

    with Catalog(root / "catalog.duckdb") as cat:
        t0, c0 = time.perf_counter(), cpu()
        train = run_train(cat, TrainConfig(CS, model, LAYER, methods, overrides=overrides))
        t_train = time.perf_counter() - t0
        t0 = time.perf_counter()
        run_latent(cat, LatentConfig(CS, model, LAYER, methods, overrides=overrides))
        t_latent = time.perf_counter() - t0
        cpu_s = cpu() - c0
    t0 = time.perf_counter()
    with Catalog(root / "catalog.duckdb", read_only=True) as cat:
        board = cat.sql("SELECT method, n_concepts, mean_auroc FROM latent_leaderboard ORDER BY method").fetchall()
    t_board = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"train_s": t_train, "latent_s": t_latent, "cpu_s": cpu_s, "leaderboard_s": t_board, "peak_rss": rss,
            "board": board, "trained": train.trained}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10,100,500")
    ap.add_argument("--tokens", type=int, default=40, help="tokens per example (AxBench: ~160)")
    ap.add_argument("--d", type=int, default=2304)
    ap.add_argument("--methods", default="diffmean,pca,lat,probe")
    ap.add_argument("--dir", default=str(ROOT.parent / "scale-bench"))
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--probe-epochs", type=int, default=2,
                    help="Probe epochs (AxBench: 24; fewer so 500 concepts fit in a benchmark run on 2 cores)")
    ap.add_argument("--phase", choices=["write", "run"], help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    base = Path(args.dir)
    methods = tuple(args.methods.split(","))
    if args.phase:  # a child process: one phase of one size, result as one JSON line
        root = base / f"n{args.n}"
        out = (write_phase(root, args.n, args.d, args.tokens) if args.phase == "write"
               else run_phase(root, args.n, args.d, methods, (f"probe.epochs={args.probe_epochs}",)))
        print(json.dumps(out))
        return
    print(f"d={args.d}, {args.tokens} tokens per example (AxBench ~160), methods {', '.join(methods)} "
          f"(probe {args.probe_epochs} epochs)")
    print(f"{'concepts':>8} {'tokens':>11} {'disk B/token':>13} {'vs 2d':>6} {'write s':>8} {'peak RSS':>10} "
          f"{'s/concept':>10} {'cpu s/c':>8} {'train s':>8} {'latent s':>9} {'leaderboard s':>14}")
    results = []
    for n in [int(x) for x in args.sizes.split(",")]:
        root = base / f"n{n}"
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        common = [sys.executable, __file__, "--dir", str(base), "--n", str(n), "--d", str(args.d), "--tokens",
                  str(args.tokens), "--methods", args.methods, "--probe-epochs", str(args.probe_epochs)]
        w = json.loads(subprocess.run(common + ["--phase", "write"], check=True, capture_output=True,
                                      text=True).stdout.strip().splitlines()[-1])
        r = json.loads(subprocess.run(common + ["--phase", "run"], check=True, capture_output=True,
                                      text=True).stdout.strip().splitlines()[-1])
        per_token = w["disk_bytes"] / w["tokens"]
        s_concept = (r["train_s"] + r["latent_s"]) / n
        results.append((n, r["peak_rss"], s_concept, r["cpu_s"] / n))
        print(f"{n:>8} {w['tokens']:>11,} {per_token:>13,.0f} {per_token / (2 * args.d):>5.2f}x {w['write_s']:>8.1f} "
              f"{r['peak_rss'] / 2**30:>8.2f} GiB {s_concept:>10.3f} {r['cpu_s'] / n:>8.3f} {r['train_s']:>8.1f} "
              f"{r['latent_s']:>9.1f} "
              f"{r['leaderboard_s']:>14.3f}", flush=True)
        print("         leaderboard: " + "; ".join(f"{m} {k} concepts {a:.3f}" for m, k, a in r["board"]), flush=True)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    if len(results) > 1:
        (n0, rss0, s0, c0), (n1, rss1, s1, c1) = results[0], results[-1]
        print(f"{n1} vs {n0} concepts: peak RSS {rss1 / rss0:.2f}x, seconds per concept {s1 / s0:.2f}x "
              f"(CPU seconds per concept {c1 / c0:.2f}x)")
        # total / N also carries each process's fixed cost (catalog queries, the shared negatives' read, first
        # fits), which a small size spreads over few concepts; the cost of each *added* concept is the slope
        # between sizes, free of it: the figure that shows whether per-concept work grows with the warehouse
        slopes = [((b[2] * b[0] - a[2] * a[0]) / (b[0] - a[0]), a[0], b[0]) for a, b in zip(results, results[1:])]
        print("seconds per added concept: " + "; ".join(f"{a}→{b}: {s:.3f}" for s, a, b in slopes)
              + (f" (last vs first: {slopes[-1][0] / slopes[0][0]:.2f}x)" if len(slopes) > 1 else "")
              + f"; fixed cost per process ≈ {results[0][2] * results[0][0] - slopes[0][0] * results[0][0]:.1f} s")


if __name__ == "__main__":
    main()

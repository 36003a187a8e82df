"""Layer sweep: mean AUROC of cached-activation methods at several layers, from ONE forward pass.

Not a test: it prints figures. Imports the shipped Concept10 release into a catalog, runs the target model once
over every example up to the deepest requested block with a hook on each requested block (writing `activations`
rows exactly as `axw activations` does, one run per layer), then trains and scores the methods per layer and
prints mean AUROC per layer × method from `latent_leaderboard`.

Two evaluations, printed one after the other (``--on``):

* ``holdout`` — the one that chooses a model's default layer, without looking at latent_eval: a quarter of each
  concept's training positives and of each genre's shared training negatives (seeded draw) is held out; methods are
  trained on the other three quarters and scored on the held-out quarter (positives of the concept vs negatives of
  its genre), as concept set ``concept10-holdout``;
* ``latent_eval`` — trained on the whole train split, scored on latent_eval (what the leaderboard reports).

    python bench/layer_sweep.py --layers 6,9,12,15,18,21,24,27 [--methods diffmean,probe,pca,lat] [--keep DIR]
                                [--on holdout,latent_eval]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
import pyarrow as pa
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from axwarehouse.catalog import Catalog  # noqa: E402
from axwarehouse.model.capture import forward_to_layers, length_batches, pad_batch  # noqa: E402
from axwarehouse.model.chat import ChatFormat  # noqa: E402
from axwarehouse.model.info import model_info  # noqa: E402
from axwarehouse.model.loader import load  # noqa: E402
from axwarehouse.stages.activations import activation_row_hash, activation_rows, missing_examples  # noqa: E402
from axwarehouse.stages.demo import DEMO_DATA  # noqa: E402
from axwarehouse.stages.import_axbench import import_axbench  # noqa: E402
from axwarehouse.stages.latent import LatentConfig, run_latent  # noqa: E402
from axwarehouse.stages.train import TrainConfig, run_train  # noqa: E402

CS = "concept10"
HOLDOUT_CS = "concept10-holdout"
HOLDOUT_FRACTION = 0.25


def holdout_release(dest: Path, fraction: float = HOLDOUT_FRACTION, seed: int = 0) -> Path:
    """An AxBench-layout release cut from the shipped Concept10 *train* split only: ``fraction`` of each concept's
    positives and of each genre's shared negatives (seeded draw) become its latent_eval rows (the concept's held-out
    positives vs the held-out negatives of its genre); the rest stays train. latent_eval is never read."""
    import json
    import shutil

    train = pl.read_parquet(DEMO_DATA / "generate" / "train_data.parquet").with_row_index("row")
    held = pl.concat([g.sample(fraction=fraction, seed=seed + k, shuffle=True)
                      for k, (_, g) in enumerate(train.group_by(["concept_id", "concept_genre"], maintain_order=True))])
    fit = train.join(held.select("row"), on="row", how="anti")
    meta = [json.loads(x) for x in (DEMO_DATA / "generate" / "metadata.jsonl").read_text().splitlines()]
    genre = {m["concept_id"]: next(iter(m["concept_genres_map"].values()))[0] for m in meta}
    pos = held.filter(pl.col("category") == "positive")
    neg = held.filter(pl.col("category") == "negative")
    evals = [pos]
    for cid, g in genre.items():  # a genre's held-out negatives serve every concept of that genre
        evals.append(neg.filter(pl.col("concept_genre") == g).with_columns(pl.lit(cid, pl.Int64).alias("concept_id")))
    # the concept's SAE reference columns, as in the shipped latent_eval file (metadata only, no scores read)
    refs = pl.read_parquet(DEMO_DATA / "inference" / "latent_eval_data.parquet",
                           columns=["concept_id", "sae_link", "sae_id"]).unique("concept_id")
    ev = pl.concat(evals).drop("row").join(refs, on="concept_id", how="left")
    (dest / "generate").mkdir(parents=True, exist_ok=True)
    (dest / "inference").mkdir(exist_ok=True)
    shutil.copy(DEMO_DATA / "generate" / "metadata.jsonl", dest / "generate" / "metadata.jsonl")
    fit.drop("row").write_parquet(dest / "generate" / "train_data.parquet")
    ev.write_parquet(dest / "inference" / "latent_eval_data.parquet")
    return dest


def capture_layers(cat: Catalog, model: str, layers: list[int], batch_tokens: int = 4096, cs: str = CS) -> float:
    """One forward per example up to max(layers); writes the missing examples' rows for every layer. Seconds."""
    info = model_info(model)
    todo = {L: missing_examples(cat, cs, info.name, L, ("train", "latent_eval")) for L in layers}
    keys = {L: set(zip(t.column("split").to_pylist(), t.column("example_id").to_pylist())) for L, t in todo.items()}
    gen = cat.arrow("SELECT split, example_id, concept_id, input, output FROM generations WHERE concept_set = ? "
                    "AND split IN ('train', 'latent_eval') ORDER BY split, example_id", [cs])
    rows = [r for r in zip(*(gen.column(c).to_pylist() for c in ("split", "example_id", "concept_id", "input",
                                                                 "output")))
            if any((r[0], r[1]) in k for k in keys.values())]
    layers = [L for L in layers if keys[L]]  # fully cached layers cost nothing (and don't deepen the pass)
    if not rows:
        return 0.0
    lm = load(model)
    chat = ChatFormat.of(lm.tokenizer)
    seqs = [chat.ids_for(s, i or "", o or "") for s, _, _, i, o in rows]
    store: dict[int, list] = {L: [None] * len(seqs) for L in layers}
    start = time.perf_counter()
    for idx in length_batches([len(s) for s in seqs], batch_tokens):
        ids, mask = pad_batch([seqs[i] for i in idx], lm.tokenizer.pad_token_id)
        got = forward_to_layers(lm.model, lm.decoder_layers(), layers, ids, mask)
        for L in layers:
            out = got[L].to(torch.float32).numpy()
            for row, i in enumerate(idx):
                store[L][i] = out[row, : len(seqs[i])]
    seconds = time.perf_counter() - start
    for L in layers:
        meta = {"model": info.name, "layer": L, "concept_set": cs}
        row_hash = activation_row_hash(info.name, L, chat, "float32")  # = `axw activations --dtype float32 --store-dtype float32`
        with cat.run("activations", {"bench": "layer_sweep", "model": info.name, "layer": L}) as run:
            mine = [i for i, (s, e, *_) in enumerate(rows) if (s, e) in keys[L]]
            for k in range(0, len(mine), 400):
                part = [(rows[i][0], rows[i][1], rows[i][2], seqs[i], store[L][i]) for i in mine[k: k + 400]]
                table = activation_rows(meta, lm.tokenizer, chat.prefix_len, part, "float32")
                run.write("activations", table.append_column("config_hash", pa.array([row_hash] * table.num_rows)))
        del store[L]
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", default="6,9,12,15,18,21,24,27")
    ap.add_argument("--model", default="embedded:smollm2")
    ap.add_argument("--methods", default="diffmean,probe,pca,lat")
    ap.add_argument("--keep", type=Path, default=None, help="Keep (and reuse) the catalog in this folder.")
    ap.add_argument("--on", default="holdout,latent_eval",
                    help="holdout (held-out quarter of train: chooses the default layer) and/or latent_eval.")
    args = ap.parse_args()
    layers = sorted({int(x) for x in args.layers.split(",")})
    methods = tuple(m.strip() for m in args.methods.split(","))
    folder = Path(tempfile.mkdtemp(prefix="axw-layer-sweep-")) if args.keep is None else args.keep
    folder.mkdir(parents=True, exist_ok=True)
    sets = {"holdout": HOLDOUT_CS, "latent_eval": CS}
    with Catalog(folder / "catalog.duckdb") as cat:
        for on in [x.strip() for x in args.on.split(",")]:
            cs = sets[on]
            if not cat.count("generations", "concept_set = ?", [cs]):
                src = DEMO_DATA if on == "latent_eval" else holdout_release(folder / "holdout-release")
                import_axbench(cat, src, cs)
            seconds = capture_layers(cat, args.model, layers, cs=cs)
            print(f"[{on}] capture of layers {layers} in one pass: {seconds:.1f}s", flush=True)
            for L in layers:
                run_train(cat, TrainConfig(cs, args.model, L, methods))
                run_latent(cat, LatentConfig(cs, args.model, L, methods))
            marks = ", ".join("?" for _ in methods)
            rows = cat.arrow(f"SELECT layer, method, round(mean_auroc, 4) AS auroc FROM latent_leaderboard "
                             f"WHERE concept_set = ? AND model = ? AND method IN ({marks}) ORDER BY layer",
                             [cs, model_info(args.model).name, *methods])
            board = pl.from_arrow(rows).pivot(on="method", index="layer", values="auroc").sort("layer")
            title = ("held-out quarter of train (chooses the default layer)" if on == "holdout"
                     else "latent_eval (reported, never used to choose)")
            print(f"mean AUROC on {title}:")
            with pl.Config(tbl_rows=100, tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True):
                print(board.select(["layer", *[m for m in methods if m in board.columns]]))
            for m in methods:
                if m in board.columns:
                    best = board.sort(m, descending=True).row(0, named=True)
                    print(f"  best layer by {m}: {best['layer']} ({best[m]})")
    print(f"catalog kept at {folder}" if args.keep else "", flush=True)


if __name__ == "__main__":
    main()

"""Layer sweep: mean AUROC of cached-activation methods at several layers, from ONE forward pass.

Not a test: it prints figures. Imports the shipped Concept10 release into a catalog, runs the target model once
over every example up to the deepest requested block with a hook on each requested block (writing `activations`
rows exactly as `axw activations` does, one run per layer), then trains and scores the methods per layer and
prints mean AUROC per layer × method from `latent_leaderboard`.

    python bench/layer_sweep.py --layers 6,9,12,15,18,21,24,27 [--methods diffmean,probe,pca,lat] [--keep DIR]
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
from axwarehouse.lm.capture import forward_to_layers, length_batches, pad_batch  # noqa: E402
from axwarehouse.lm.chat import ChatFormat  # noqa: E402
from axwarehouse.lm.info import model_info  # noqa: E402
from axwarehouse.lm.loader import load  # noqa: E402
from stages.activations import activation_row_hash, activation_rows, missing_examples  # noqa: E402
from stages.demo import DEMO_DATA  # noqa: E402
from stages.import_axbench import import_axbench  # noqa: E402
from stages.latent import LatentConfig, run_latent  # noqa: E402
from stages.train import TrainConfig, run_train  # noqa: E402

CS = "concept10"


def capture_layers(cat: Catalog, model: str, layers: list[int], batch_tokens: int = 4096) -> float:
    """One forward per example up to max(layers); writes the missing examples' rows for every layer. Seconds."""
    info = model_info(model)
    todo = {L: missing_examples(cat, CS, info.name, L, ("train", "latent_eval")) for L in layers}
    keys = {L: set(zip(t.column("split").to_pylist(), t.column("example_id").to_pylist())) for L, t in todo.items()}
    gen = cat.arrow("SELECT split, example_id, concept_id, input, output FROM generations WHERE concept_set = ? "
                    "AND split IN ('train', 'latent_eval') ORDER BY split, example_id", [CS])
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
        meta = {"model": info.name, "layer": L, "concept_set": CS}
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
    args = ap.parse_args()
    layers = sorted({int(x) for x in args.layers.split(",")})
    methods = tuple(m.strip() for m in args.methods.split(","))
    folder = Path(tempfile.mkdtemp(prefix="axw-layer-sweep-")) if args.keep is None else args.keep
    folder.mkdir(parents=True, exist_ok=True)
    with Catalog(folder / "catalog.duckdb") as cat:
        if not cat.count("generations", "concept_set = ?", [CS]):
            import_axbench(cat, DEMO_DATA, CS)
        seconds = capture_layers(cat, args.model, layers)
        print(f"capture of layers {layers} in one pass: {seconds:.1f}s", flush=True)
        for L in layers:
            run_train(cat, TrainConfig(CS, args.model, L, methods))
            run_latent(cat, LatentConfig(CS, args.model, L, methods))
        marks = ", ".join("?" for _ in methods)
        rows = cat.arrow(f"SELECT layer, method, round(mean_auroc, 4) AS auroc FROM latent_leaderboard "
                         f"WHERE concept_set = ? AND method IN ({marks}) ORDER BY layer", [CS, *methods])
    board = pl.from_arrow(rows).pivot(on="method", index="layer", values="auroc").sort("layer")
    with pl.Config(tbl_rows=100, tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True):
        print(board.select(["layer", *[m for m in methods if m in board.columns]]))
    print(f"catalog kept at {folder}" if args.keep else "")


if __name__ == "__main__":
    main()

"""Benchmark the latent half: activation capture vs a bare forward, per-method train + latent time, end to end.

Not a test: it prints figures. Ratios are against baselines measured in the same run on the same machine:

* capture ratio = tokens/s of `axw activations` (tokenise, length-sorted batches, stop after layer L, write
  Parquet) divided by tokens/s of a bare forward to layer L over the same texts in data order, batch 16, outputs
  discarded (how a straightforward script would run it);
* per method: seconds to train every concept and to score every eval example (cached activations only);
* end to end: import → activations → train → latent for all methods; peak RSS of this process.

    python bench/latent.py [--concepts 10] [--model embedded:smollm2] [--layer L] [--methods diffmean,pca,lat,probe]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import psutil
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from axwarehouse.catalog import Catalog  # noqa: E402
from axwarehouse.lm.capture import forward_to_layer, pad_batch  # noqa: E402
from axwarehouse.lm.chat import ChatFormat  # noqa: E402
from axwarehouse.lm.info import model_info  # noqa: E402
from axwarehouse.lm.loader import load  # noqa: E402
from stages.activations import ActivationsConfig, run_activations  # noqa: E402
from stages.demo import DEMO_DATA  # noqa: E402
from stages.import_axbench import import_axbench  # noqa: E402
from stages.latent import LatentConfig, run_latent  # noqa: E402
from stages.train import TrainConfig, run_train  # noqa: E402


def _ru_maxrss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def bare_forward(model_spec: str, layer: int, texts: list[tuple[str, str, str]], batch: int = 16) -> tuple[int, float]:
    """Tokens and seconds of a plain batched forward to layer L in data order (the baseline)."""
    lm = load(model_spec)
    chat = ChatFormat.of(lm.tokenizer)
    seqs = [chat.ids_for(s, i, o) for s, i, o in texts]
    layers = lm.decoder_layers()
    start = time.perf_counter()
    for k in range(0, len(seqs), batch):
        ids, mask = pad_batch(seqs[k: k + batch], lm.tokenizer.pad_token_id)
        forward_to_layer(lm.model, layers, layer, ids, mask)
    return sum(len(s) for s in seqs), time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concepts", type=int, default=10, help="use the first N concepts of the shipped Concept10")
    ap.add_argument("--model", default="embedded:smollm2")
    ap.add_argument("--layer", type=int, default=None)
    ap.add_argument("--methods", default="diffmean,pca,lat,probe")
    args = ap.parse_args()
    methods = tuple(args.methods.split(","))
    info = model_info(args.model)
    layer = info.check_layer(args.layer)
    print(f"model {info.name} layer {layer}; torch threads {torch.get_num_threads()}; "
          f"cpus {psutil.cpu_count()}")

    with tempfile.TemporaryDirectory() as tmp:
        t_all = time.perf_counter()
        with Catalog(Path(tmp) / "catalog.duckdb") as cat:
            import_axbench(cat, DEMO_DATA, "bench")
            if args.concepts < 10:
                keep = list(range(args.concepts))
                cat.delete_where("generations", f"concept_id NOT IN ({','.join(map(str, keep))}) AND concept_id <> -1")
                cat.delete_where("concepts", f"concept_id NOT IN ({','.join(map(str, keep))})")
            texts = cat.sql("SELECT split, input, output FROM generations WHERE concept_set = 'bench' "
                            "ORDER BY split, example_id").fetchall()
            load(args.model)  # load once, outside both timings
            n_tok, t_bare = bare_forward(args.model, layer, texts)
            t0 = time.perf_counter()
            acts = run_activations(cat, ActivationsConfig("bench", args.model, layer))
            t_capture = time.perf_counter() - t0
            bare_rate, cap_rate = n_tok / t_bare, acts.tokens / t_capture
            print(f"examples {len(texts)}, tokens {n_tok}")
            print(f"bare forward to layer {layer} (batch 16, data order): {bare_rate:,.0f} tok/s ({t_bare:.1f}s)")
            print(f"axw activations (capture + Parquet write):        {cap_rate:,.0f} tok/s ({t_capture:.1f}s)")
            print(f"capture / bare ratio: {cap_rate / bare_rate:.2f}x")
            for m in methods:
                t0 = time.perf_counter()
                run_train(cat, TrainConfig("bench", args.model, layer, (m,)))
                t_train = time.perf_counter() - t0
                t0 = time.perf_counter()
                run_latent(cat, LatentConfig("bench", args.model, layer, (m,)))
                t_lat = time.perf_counter() - t0
                print(f"method {m:<9} train {t_train:6.2f}s   latent {t_lat:6.2f}s")
            rows = cat.sql("SELECT method, round(mean_auroc, 4), n_concepts FROM latent_leaderboard "
                           "ORDER BY mean_auroc DESC").fetchall()
        print(f"end to end (import, activations, train, latent): {time.perf_counter() - t_all:.1f}s "
              f"(bare-forward baseline excluded: {time.perf_counter() - t_all - t_bare:.1f}s)")
        print(f"peak RSS: {_ru_maxrss_mb():,.0f} MiB")
        for r in rows:
            print("  auroc", *r)


if __name__ == "__main__":
    main()

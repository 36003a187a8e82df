"""Benchmark the latent half: activation capture vs a bare forward, per-method train + latent time, end to end.

Not a test: it prints figures. Ratios are against baselines measured in the same run on the same machine:

* capture, in bfloat16 (`axw activations` default here: bf16 compute, bf16 storage) and in float32 (`--dtype
  float32 --store-dtype float32`, what axw did before bf16), in the same run: tokens/s of `axw activations`
  (tokenise, length-sorted batches, stop after layer L, write Parquet) vs tokens/s of a bare forward to layer L in
  the same dtype over the same texts in data order, batch 16, outputs discarded (how a straightforward script would
  run it); and bf16 capture / fp32 capture;
* per method: seconds to train every concept and to score every eval example (cached activations only);
* end to end: import → activations → train → latent for all methods (on the bf16 activations); per-concept AUROC
  of each method; peak RSS of this process.

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
from axwarehouse.model.capture import forward_to_layer, pad_batch  # noqa: E402
from axwarehouse.model.chat import ChatFormat  # noqa: E402
from axwarehouse.model.info import model_info  # noqa: E402
from axwarehouse.model.loader import load, native_bf16  # noqa: E402
from axwarehouse.stages.activations import ActivationsConfig, run_activations  # noqa: E402
from axwarehouse.stages.demo import DEMO_DATA  # noqa: E402
from axwarehouse.stages.import_axbench import import_axbench  # noqa: E402
from axwarehouse.stages.latent import LatentConfig, run_latent  # noqa: E402
from axwarehouse.stages.train import TrainConfig, run_train  # noqa: E402


def _ru_maxrss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def bare_forward(model_spec: str, layer: int, texts: list[tuple[str, str, str]], batch: int = 16,
                 dtype: str = "float32") -> tuple[int, float]:
    """Tokens and seconds of a plain batched forward to layer L in data order (the baseline)."""
    lm = load(model_spec, dtype)
    chat = ChatFormat.of(lm.tokenizer)
    seqs = [chat.ids_for(s, i, o) for s, i, o in texts]
    layers = lm.decoder_layers()
    start = time.perf_counter()
    for k in range(0, len(seqs), batch):
        ids, mask = pad_batch(seqs[k: k + batch], lm.tokenizer.pad_token_id)
        forward_to_layer(lm.model, layers, layer, ids, mask)
    return sum(len(s) for s in seqs), time.perf_counter() - start


def _keep(cat: Catalog, n: int) -> None:
    keep = ",".join(map(str, range(n)))
    cat.delete_where("generations", f"concept_id NOT IN ({keep}) AND concept_id <> -1")
    cat.delete_where("concepts", f"concept_id NOT IN ({keep})")


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
                _keep(cat, args.concepts)
            texts = cat.sql("SELECT split, input, output FROM generations WHERE concept_set = 'bench' "
                            "ORDER BY split, example_id").fetchall()
            print(f"examples {len(texts)}; bfloat16 native on this CPU: {native_bf16('cpu')}")
            rates = {}
            for dtype, store in (("float32", "float32"), ("bfloat16", "bfloat16")):
                load(args.model, dtype)  # load once, outside both timings
                n_tok, t_bare = bare_forward(args.model, layer, texts, dtype=dtype)
                with Catalog(Path(tmp) / f"{dtype}.duckdb") as side:  # its own warehouse: nothing cached yet
                    import_axbench(side, DEMO_DATA, "bench")
                    if args.concepts < 10:
                        _keep(side, args.concepts)
                    t0 = time.perf_counter()
                    acts = run_activations(side, ActivationsConfig("bench", args.model, layer, dtype=dtype,
                                                                   store_dtype=store))
                    t_capture = time.perf_counter() - t0
                bare_rate, cap_rate = n_tok / t_bare, acts.tokens / t_capture
                rates[dtype] = cap_rate
                print(f"{dtype:<8} bare forward to layer {layer} (batch 16, data order): {bare_rate:,.0f} tok/s "
                      f"({t_bare:.1f}s, {n_tok} tokens)")
                print(f"{dtype:<8} axw activations (capture + Parquet write, stored {store}): {cap_rate:,.0f} tok/s "
                      f"({t_capture:.1f}s); capture / bare {cap_rate / bare_rate:.2f}x")
            print(f"bf16 capture / fp32 capture: {rates['bfloat16'] / rates['float32']:.2f}x")
            run_activations(cat, ActivationsConfig("bench", args.model, layer))  # default settings, for the methods
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
            per_concept = cat.sql("SELECT concept_id, method, auroc FROM latent_auroc ORDER BY 1, 2").fetchall()
        print(f"end to end (import, activations, train, latent): {time.perf_counter() - t_all:.1f}s "
              f"(bare-forward baseline excluded: {time.perf_counter() - t_all - t_bare:.1f}s)")
        print(f"peak RSS: {_ru_maxrss_mb():,.0f} MiB")
        for r in rows:
            print("  auroc", *r)
        names = sorted({m for _, m, _ in per_concept})
        print("per-concept AUROC (bf16 activations):  concept " + " ".join(f"{m:>9}" for m in names))
        table = {(c, m): a for c, m, a in per_concept}
        for c in sorted({c for c, _, _ in per_concept}):
            print(f"  {c:>7} " + " ".join(f"{table.get((c, m), float('nan')):9.6f}" for m in names))


if __name__ == "__main__":
    main()

"""The proxy judge's log-probability passes: the distinct prompts run once and the outputs batched across prompts,
each over its own prompt's cached keys/values (:func:`axwarehouse.model.prefix_logp.shared_prompt_logp`, what
`measure_texts` uses) against the baseline of every prompt + output run in full
(:func:`axwarehouse.judging.conditional_perplexity.conditional_perplexity`, what it used before), in the same run,
interleaved, on the same rows.

Also the concept classifiers of every Concept10 concept, fitted as `axw judge` fits them (each text's n-grams
counted once per process, liblinear's dual problem) against the previous fit (n-grams counted again for every
concept, liblinear's primal problem), same run, with the largest probability difference on the latent-eval texts.

Not a test: it prints seconds, the ratio and the largest difference of the measurements (and whether any rating
changes under one calibration), and the floor of these passes on this machine: the scored tokens (each output
twice) at the model's own forward rate on full batches (16 rows x 128 tokens, every position's logits) and at the
matmul probe's rate (2 x parameters FLOP per token) — no implementation of this judge's two passes per output can
beat the second. Rows: the steered outputs of a warehouse (``--catalog``), or by default a workload
shaped like `axw demo`'s: 40 instructions of the shipped set × 7 outputs each (Concept10 latent-eval texts cut to 48
tokens), each output measured under its instruction and under the empty one, as `axw judge --judge proxy` does.

    python bench/proxy_judge_speed.py [--catalog PATH] [--rounds 2] [--model embedded:smollm2] [--dtype auto]
                                      [--concepts 10] [--instructions 40]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import duckdb
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from axwarehouse.judging import proxy_measures as pj  # noqa: E402
from axwarehouse.stages.demo import DEMO_DATA  # noqa: E402


def demo_like_rows(tokenizer, n_instructions: int = 40, per_instruction: int = 7, tokens: int = 48):
    from axwarehouse.steering.instructions import load_instructions

    texts = [t for (t,) in duckdb.sql(f"SELECT output FROM read_parquet('{DEMO_DATA}/inference/"
                                      "latent_eval_data.parquet') ORDER BY concept_id, output").fetchall()]
    instr = load_instructions().instructions[:n_instructions]
    rows = []
    for k, i in enumerate(instr):
        for j in range(per_instruction):
            ids = tokenizer.encode(texts[(k * per_instruction + j) * 3 % len(texts)], add_special_tokens=False)
            rows.append((i, tokenizer.decode(ids[:tokens])))
    return rows


def catalog_rows(path: Path):
    from axwarehouse.catalog import Catalog

    with Catalog(path, read_only=True) as cat:
        return [(i or "", g or "") for i, g in cat.sql(
            "SELECT instruction, generation FROM steering_outputs ORDER BY output_id").fetchall()]


def baseline(lm, instructions, outputs) -> list[pj.TextMeasure]:
    """measure_texts as it was: every distinct (prompt, output) pair run in full, prompt included."""
    from axwarehouse.model.chat import ChatFormat
    from axwarehouse.judging.conditional_perplexity import conditional_perplexity

    chat = ChatFormat.of(lm.tokenizer)
    gens = [tuple(lm.tokenizer.encode(o, add_special_tokens=False)) for o in outputs]
    pairs = [(tuple(chat.prompt_ids(i)), g) for i, g in zip(instructions, gens)] + \
            [(tuple(chat.prompt_ids("")), g) for g in gens]
    unique = list(dict.fromkeys(pairs))
    ppl = conditional_perplexity(lm, [p for p, _ in unique], [g for _, g in unique])
    logp = {pair: None if p is None else -math.log(p) for pair, p in zip(unique, ppl)}
    n = len(gens)
    return [pj.TextMeasure(len(g), logp[pairs[k]], logp[pairs[n + k]], pj.distinct_share(g))
            for k, g in enumerate(gens)]


def previous_fit(pos: list[str], neg: list[str], seed: int = 42):
    """ConceptClassifier.fit as it was: a CountVectorizer fitted per concept, liblinear's primal problem."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    from axwarehouse.judging.concept_features import classifier, ngram_counts

    def model():
        m = classifier(seed)
        m.steps[-1] = ("logisticregression", LogisticRegression(C=10.0, class_weight="balanced", solver="liblinear",
                                                                max_iter=1000, random_state=seed))
        return m

    texts, y = pos + neg, np.array([1] * len(pos) + [0] * len(neg))
    counts = ngram_counts()
    x = counts.fit_transform(texts)
    folds = StratifiedKFold(n_splits=pj.CV_FOLDS, shuffle=True, random_state=seed)
    cross_val_predict(model(), x, y, cv=folds, method="predict_proba")
    fitted = model().fit(x, y)
    return lambda t: fitted.predict_proba(counts.transform(t))[:, 1]


def concept_fits(n_concepts: int) -> None:
    import tempfile

    from axwarehouse.catalog import Catalog
    from axwarehouse.stages.import_axbench import import_axbench
    from axwarehouse.judging.proxy_calibration import concept_training_texts

    with tempfile.TemporaryDirectory() as tmp, Catalog(Path(tmp) / "catalog.duckdb") as cat:
        import_axbench(cat, DEMO_DATA, "concept10")
        texts = [concept_training_texts(cat, "concept10", c, 42) for c in range(n_concepts)]
        evals = [t for (t,) in cat.sql("SELECT output FROM generations WHERE concept_set = 'concept10' AND "
                                       "split = 'latent_eval' ORDER BY concept_id, example_id").fetchall()]
    t0 = time.perf_counter()
    old = [previous_fit(p, n) for p, n in texts]  # first: the new path's per-process n-gram memo starts empty
    old_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    new = [pj.ConceptClassifier.fit(p, n) for p, n in texts]
    new_s = time.perf_counter() - t0
    diff = max(float(np.abs(np.array(n.probability(evals)) - o(evals)).max()) for o, n in zip(old, new))
    print(f"concept classifiers of {n_concepts} concepts: previous fit {old_s:.1f} s, now {new_s:.1f} s "
          f"({old_s / new_s:.2f}x); largest probability difference on {len(evals)} latent-eval texts {diff:.1e}")


def forward_rate(lm, rows: int = 16, tokens: int = 128, rounds: int = 3) -> float:
    """Tokens/s of the model's forward on full batches of random tokens, every position's logits computed: the rate
    of a teacher-forced pass without prompts, padding or caches (best of ``rounds``)."""
    import torch

    ids = torch.randint(100, lm.model.config.vocab_size, (rows, tokens))
    best = math.inf
    with torch.inference_mode():
        lm.model(input_ids=ids, use_cache=False)
        for _ in range(rounds):
            t0 = time.perf_counter()
            lm.model(input_ids=ids, use_cache=False)
            best = min(best, time.perf_counter() - t0)
    return rows * tokens / best


def print_floor(lm, dtype: str, scored_tokens: int, measured: float) -> None:
    from bench.cpu_probe import probe
    from bench.steer import flop_per_token

    fpt = flop_per_token(lm)
    gemm, rate = probe(seconds=3.0, dtype=dtype, threads=None), forward_rate(lm)
    at_peak = scored_tokens * fpt / (gemm * 1e9)
    print(f"  floor of {scored_tokens} scored tokens ({dtype}): at the model's full-batch forward rate "
          f"({rate:.0f} tok/s) {scored_tokens / rate:.1f} s; at the {gemm:.0f} GFLOP/s matmul probe "
          f"({fpt / 1e6:.0f} MFLOP per token) {at_peak:.1f} s; measured {measured:.1f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--catalog", type=Path)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--model", default="embedded:smollm2")
    ap.add_argument("--dtype", default="auto", help="the judge's dtype (auto: bfloat16 where the CPU has it natively)")
    ap.add_argument("--concepts", type=int, default=10, help="concept classifiers to fit (0: skip)")
    ap.add_argument("--instructions", type=int, default=40, help="instructions of the demo-like workload (x 7)")
    args = ap.parse_args()
    import torch

    from axwarehouse.model.loader import load, resolve_dtype

    dtype = resolve_dtype(args.dtype, "cpu")
    lm = load(args.model, dtype)
    rows = catalog_rows(args.catalog) if args.catalog else demo_like_rows(lm.tokenizer, args.instructions)
    instructions, outputs = [i for i, _ in rows], [g for _, g in rows]
    n_tok = sum(len(lm.tokenizer.encode(o, add_special_tokens=False)) for o in outputs)
    from bench.cpu_probe import cpu_model

    cpu, flags = cpu_model()
    print(f"{cpu} ({flags}); {dtype}; torch threads {torch.get_num_threads()}; {len(rows)} outputs "
          f"({len(set(instructions))} instructions), {n_tok} output tokens, each measured with and without its "
          "instruction")
    old_s, new_s = [], []
    for _ in range(args.rounds):  # interleaved: the machine's load hits both alike
        t0 = time.perf_counter()
        old = baseline(lm, instructions, outputs)
        old_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        new = pj.measure_texts(lm, instructions, outputs)
        new_s.append(time.perf_counter() - t0)
    diff = max(abs(a - b) for o, n in zip(old, new) for a, b in
               [(o.logp_given_instruction, n.logp_given_instruction),
                (o.logp_without_instruction, n.logp_without_instruction)] if a is not None)
    th = pj.Thresholds(float(np.quantile([m.pmi for m in old if m.pmi is not None], 0.3)),
                       float(np.quantile([m.pmi for m in old if m.pmi is not None], 0.7)))
    changed = sum(a != b for a, b in zip(th.rate([m.pmi for m in old]), th.rate([m.pmi for m in new])))
    print(f"  full passes (baseline): {min(old_s):.1f} s (rounds {', '.join(f'{s:.1f}' for s in old_s)})")
    print(f"  shared prompts:         {min(new_s):.1f} s (rounds {', '.join(f'{s:.1f}' for s in new_s)}), "
          f"{min(old_s) / min(new_s):.2f}x the baseline's speed")
    print(f"  largest difference of a mean log p per token: {diff:.2e}; instruction ratings changed under "
          f"thresholds at the PMI's 30/70 % quantiles: {changed} of {len(rows)}")
    print_floor(lm, dtype, 2 * n_tok, min(new_s))
    if args.concepts:
        concept_fits(args.concepts)


if __name__ == "__main__":
    main()

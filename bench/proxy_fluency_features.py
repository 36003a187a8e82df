"""Which measurement should the proxy judge's fluency rating threshold? Candidates compared on Concept10's *train*
texts (never on ``latent_eval``, which `axw judge validate` rates), each thresholded the way the judge does it:
the low threshold is the 90 % quantile of the measurement on the unsteered model's answers to the 20 held-out
calibration instructions with their words shuffled.

    python bench/proxy_fluency_features.py [--per-concept 24] [--model embedded:smollm2]

Measurements of a text's tokens x_1..x_n after the empty instruction's chat prompt, under the unsteered model:

* ``logp``: mean log p(x_t | prompt, x_<t) — what the proxy judge thresholds (−log perplexity);
* ``gain_over_unigram``: ``logp`` minus the mean log p_uni(x_t), p_uni being the model's own next-token
  distribution averaged over every position of the calibration answers — how much the text's order tells the model
  beyond its words (a shuffled text keeps its words and loses its order; a text from an unusual domain has rare
  words but keeps its order);
* ``gain_over_own_shuffle``: ``logp`` minus ``logp`` of the same text with its words shuffled (seeded by the text).

Printed per concept and macro, for each measurement alone (no repetition veto): the share of texts as written
rated fluent (TPR), of their word-shuffled versions rated fluent (FPR) and the AUROC of written vs shuffled. Then the
repetition veto's two candidate measurements, the share of distinct tokens (what the judge uses) and of distinct
token bigrams, each thresholded at the 90 % quantile of the half-looped calibration answers: the share of texts as
written that pass the veto and of their half-looped versions that pass it. Runs on any machine; the figures do not
depend on its speed.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from axwarehouse import DATA_DIR  # noqa: E402
from axwarehouse.judging import proxy_measures as pj  # noqa: E402
from axwarehouse.model.chat import ChatFormat  # noqa: E402
from axwarehouse.model.loader import load  # noqa: E402
from axwarehouse.steering.instructions import judge_calibration_set  # noqa: E402

MAX_TOKENS = 256
BATCH = 16


def token_logps(lm, prompt: list[int], gens: list[list[int]], marginal: np.ndarray | None = None
                ) -> tuple[list[np.ndarray], np.ndarray | None]:
    """Per-token log p of each generation after ``prompt``; with ``marginal`` given (a float64 [V] accumulator),
    also adds every generation position's next-token distribution to it."""
    out: list[np.ndarray] = []
    pad = lm.tokenizer.pad_token_id or 0
    for start in range(0, len(gens), BATCH):
        chunk = gens[start:start + BATCH]
        seqs = [prompt + g for g in chunk]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for r, s in enumerate(seqs):
            ids[r, :len(s)] = torch.tensor(s)
            mask[r, :len(s)] = 1
        with torch.inference_mode():
            logits = lm.model(input_ids=ids, attention_mask=mask).logits.float()
        logp = torch.log_softmax(logits, dim=-1)
        for r, g in enumerate(chunk):
            if not g:
                out.append(np.zeros(0))
                continue
            pos = torch.arange(len(prompt) - 1, len(prompt) + len(g) - 1)
            out.append(logp[r, pos, torch.tensor(g)].numpy().astype(np.float64))
            if marginal is not None:
                marginal += logp[r, pos].exp().sum(0).numpy().astype(np.float64)
    return out, marginal


def distinct_bigram_share(ids) -> float | None:
    """Distinct token bigrams / bigrams (1 - seq-rep-2); 1.0 for one token, None when empty."""
    pairs = list(zip(ids, ids[1:]))
    return None if not len(ids) else len(set(pairs)) / len(pairs) if pairs else 1.0


def shuffled(text: str) -> str:
    return pj.shuffle_words(text, random.Random(int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-concept", type=int, default=24)
    ap.add_argument("--model", default="embedded:smollm2")
    args = ap.parse_args()
    import pyarrow.parquet as pq

    t0 = time.perf_counter()
    lm = load(args.model, "float32")
    tok = lm.tokenizer
    prompt = ChatFormat.of(tok).prompt_ids("")
    enc = lambda s: tok.encode(s or "", add_special_tokens=False)[:MAX_TOKENS]  # noqa: E731

    iset = judge_calibration_set()
    answers = [a for a in pj.reference_answers(lm, list(iset.instructions), 128, 1.0, 42) if a.strip()]
    rng = random.Random(42)
    cal_shuffled = [pj.shuffle_words(a, rng) for a in answers]
    cal_looped = [pj.half_loop(a, rng) for a in answers]
    marginal = np.zeros(lm.model.get_output_embeddings().weight.shape[0])
    _, marginal = token_logps(lm, prompt, [enc(a) for a in answers], marginal)
    log_uni = np.log(marginal / marginal.sum())

    def measures(texts: list[str]) -> dict[str, np.ndarray]:
        ids = [enc(x) for x in texts]
        lp, _ = token_logps(lm, prompt, ids)
        re_lp, _ = token_logps(lm, prompt, [enc(shuffled(x)) for x in texts])
        logp = np.array([v.mean() if len(v) else np.nan for v in lp])
        uni = np.array([log_uni[i].mean() if i else np.nan for i in ids])
        own = np.array([v.mean() if len(v) else np.nan for v in re_lp])
        return {"logp": logp, "gain_over_unigram": logp - uni, "gain_over_own_shuffle": logp - own}

    cal_neg = measures(cal_shuffled)
    lows = {k: float(np.nanquantile(v, pj.NEG_QUANTILE)) for k, v in cal_neg.items()}

    table = pq.read_table(DATA_DIR / "axbench-concept10" / "prod_2b_l10_v1" / "generate" / "train_data.parquet")
    rows = table.to_pylist()
    from sklearn.metrics import roc_auc_score

    print(f"{'concept':>7} " + " ".join(f"{k[:22]:>22}" for k in lows) + "   (TPR / FPR shuffled / AUROC)")
    macro = {k: [] for k in lows}
    vetoes = {"distinct tokens": pj.distinct_share, "distinct bigrams": distinct_bigram_share}
    veto_lows = {name: pj.calibrate_veto([f(enc(x)) for x in cal_looped]).low for name, f in vetoes.items()}
    veto_rates = {name: [] for name in vetoes}
    for c in range(10):
        texts = [r["output"] for r in rows if r["concept_id"] == c][:args.per_concept]
        own = measures(texts)
        mix = random.Random(c)
        shuf = measures([pj.shuffle_words(x, mix) for x in texts])
        looped = [pj.half_loop(x, mix) for x in texts]
        cells = []
        for k, low in lows.items():
            tpr, fpr = float(np.mean(own[k] >= low)), float(np.mean(shuf[k] >= low))
            auc = roc_auc_score([1] * len(texts) + [0] * len(texts), np.r_[own[k], shuf[k]])
            macro[k].append((tpr, fpr, auc))
            cells.append(f"{tpr:.2f}/{fpr:.2f}/{auc:.2f}")
        for name, f in vetoes.items():
            kept = np.mean([(f(enc(x)) or 0.0) >= veto_lows[name] for x in texts])
            passed = np.mean([(f(enc(x)) or 0.0) >= veto_lows[name] for x in looped])
            veto_rates[name].append((kept, passed))
        print(f"{c:>7} " + " ".join(f"{x:>22}" for x in cells), flush=True)
    print(f"{'macro':>7} " + " ".join(f"{'/'.join(f'{m:.3f}' for m in np.mean(v, axis=0)):>22}"
                                     for v in macro.values()))
    for name, rates in veto_rates.items():
        kept, passed = np.array(rates).T
        print(f"repetition veto by {name} (threshold {veto_lows[name]:.3f}): texts as written kept "
              f"{kept.mean():.3f} (lowest concept {kept.min():.2f}), half-looped texts passing {passed.mean():.3f} "
              f"(highest concept {passed.max():.2f})")
    print(f"thresholds: {lows}; {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()

"""DiffMean factor sweep rated by the proxy judge, straight from a warehouse's cached activations (no train/latent
stage needed, so it runs on a partly built demo warehouse): per-factor means of the three ratings.

    python bench/proxy_judge_sweep.py WAREHOUSE_DIR --concept 0 [--factors 0.2,0.6,1,2,3,5] [--instructions 4]

DiffMean direction = mean(train positive-token activations) − mean(shared-negative-token activations) at the
cached layer over whatever train rows are cached, unit norm; magnitude a_c = the max projection of the positive
tokens (as `axw steer` uses the max latent score). Steered with the same batched generation as `axw steer`
(temperature 1, 48 new tokens, pyvene addition at the layer), rated with the functions `axw judge --judge proxy`
uses; the instruction/fluency calibration uses the sweep's instructions plus the first instructions of the set.
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import time
from pathlib import Path

import duckdb
import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("warehouse", type=Path)
    ap.add_argument("--concept", type=int, default=0)
    ap.add_argument("--factors", default="0.2,0.6,1,2,3,5")
    ap.add_argument("--instructions", type=int, default=4)
    ap.add_argument("--model", default="embedded:smollm2")
    args = ap.parse_args()

    from axwarehouse.model.chat import ChatFormat
    from axwarehouse.model.loader import load
    from axwarehouse.judging import proxy_measures as pj
    from axwarehouse.steering import GenRow, generate_rows
    from axwarehouse.steering.instructions import load_instructions
    from axwarehouse.steering.intervention import Steerer
    from axwarehouse.judging.proxy_calibration import OTHER_POSITIVES_PER_POSITIVE

    t0 = time.perf_counter()
    c, wh = args.concept, args.warehouse
    acts = duckdb.sql(f"""SELECT g.concept_id, a.layer, a.act FROM read_parquet('{wh}/activations/**/*.parquet') a
                          JOIN read_parquet('{wh}/generations/**/*.parquet') g USING (split, example_id)
                          WHERE a.split = 'train' AND NOT a.is_prefix AND g.concept_id IN ({c}, -1)""").fetchall()
    layer = acts[0][1]
    pos = np.array([r[2] for r in acts if r[0] == c], dtype=np.float32)
    neg = np.array([r[2] for r in acts if r[0] == -1], dtype=np.float32)
    w = pos.mean(0) - neg.mean(0)
    w /= np.linalg.norm(w)
    mag = float((pos @ w).max())
    print(f"concept {c}, layer {layer}: {len(pos)} positive / {len(neg)} negative tokens cached, a_c = {mag:.2f}")
    lm = load(args.model)
    chat = ChatFormat.of(lm.tokenizer)
    iset = load_instructions()
    instr = [iset.instructions[i] for _, i, _ in iset.draw(c, args.instructions)]
    factors = [float(f) for f in args.factors.split(",")]
    cells = [(f, k, i) for f in factors for k, i in enumerate(instr)]
    rows = [GenRow(tuple(chat.prompt_ids(i)), w, f * mag, 7 + k) for f, k, i in cells]
    texts = [o.text for o in generate_rows(lm, Steerer(lm.model, layer), rows, max_new_tokens=48, temperature=1.0)]
    print(f"steered {len(texts)} outputs in {time.perf_counter() - t0:.0f}s")

    gens = duckdb.sql(f"""SELECT concept_id, category, output FROM read_parquet('{wh}/generations/**/*.parquet')
                          WHERE split = 'train' AND output IS NOT NULL ORDER BY concept_id, category, example_id""").fetchall()
    p_texts = [t for ci, k, t in gens if ci == c and k == "positive"]
    n_texts = [t for ci, k, t in gens if ci in (c, -1) and k != "positive"]
    others = [t for ci, k, t in gens if ci not in (c, -1) and k == "positive"]
    if len(others) > OTHER_POSITIVES_PER_POSITIVE * len(p_texts):
        others = random.Random(42).sample(others, OTHER_POSITIVES_PER_POSITIVE * len(p_texts))
    clf = pj.ConceptClassifier.fit(p_texts, n_texts + others)
    cal_instr = instr + [i for i in iset.instructions[:8] if i not in instr][:4]
    cal = pj.calibrate_lm(lm, cal_instr, pj.reference_answers(lm, cal_instr, 48, 1.0, 42), 42)
    print(f"thresholds: concept {clf.thresholds}, instruction {cal.instruction}, fluency {cal.fluency}, "
          f"repetition veto {cal.repetition}")
    m = pj.measure_texts(lm, [i for _, _, i in cells], texts)
    prob = clf.probability(texts)
    rc, ri = clf.thresholds.rate(prob), cal.instruction.rate([x.pmi for x in m])
    rf = [pj.rate_fluency(x, cal.fluency, cal.repetition)[0] for x in m]
    per = collections.defaultdict(list)
    for n, (f, _, _) in enumerate(cells):
        s = 0.0 if 0 in (rc[n], ri[n], rf[n]) else 3 / (1 / rc[n] + 1 / ri[n] + 1 / rf[n])
        per[f].append((rc[n], ri[n], rf[n], s, prob[n], m[n].pmi or 0.0, m[n].fluency or 0.0))
        print(json.dumps({"factor": f, "concept": rc[n], "instruction": ri[n], "fluency": rf[n],
                          "text": texts[n][:100]}))
    print("factor | concept | instruction | fluency | harmonic mean | P(concept) | PMI/token | log p/token")
    for f in factors:
        print(f"{f} | " + " | ".join(f"{v:.2f}" for v in np.mean(per[f], axis=0)))
    print(f"total {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()

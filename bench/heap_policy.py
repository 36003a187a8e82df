"""Model forward passes under the three allocation policies of axwarehouse/heap.py, each in its own process (the
policy is process-wide): glibc's default (the baseline), the bounded policy of the streaming stages, and the reuse
policy that follows them (and that `steer` and `judge` use).

Not a test: it prints figures. Each process loads the embedded model, sets its policy, and times
``--passes`` full forward passes of a [16, 256] batch (best of 3 rounds); the policies are run in turn over
``--rounds`` so that drift of the machine's speed hits each alike. Also prints minor page faults per pass.

    python bench/heap_policy.py [--rounds 2] [--passes 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, time, torch
sys.path.insert(0, {root!r})
torch.set_num_threads({threads})
from axwarehouse import heap
from axwarehouse.model.loader import load, resolve_dtype
lm = load("embedded:smollm2", resolve_dtype("auto"))
if {policy!r} == "bounded":
    assert heap.bound_heap_growth()
elif {policy!r} == "reuse":
    assert heap.reuse_large_buffers()
ids = torch.randint(0, 40000, (16, 256))
with torch.inference_mode():
    lm.model.model(input_ids=ids[:2])
    best, faults = float("inf"), 0
    for _ in range(3):
        f0, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
        for _ in range({passes}):
            lm.model.model(input_ids=ids)
        best = min(best, time.perf_counter() - t0)
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
print(json.dumps({{"seconds": best / {passes}, "faults": faults / {passes}}}))
"""

POLICIES = ("default", "bounded", "reuse")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--passes", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    runs: dict[str, list[dict]] = {p: [] for p in POLICIES}
    for _ in range(args.rounds):
        for policy in POLICIES:
            code = CHILD.format(root=str(ROOT), policy=policy, passes=args.passes, threads=args.threads)
            out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
            runs[policy].append(json.loads(out.stdout.strip().splitlines()[-1]))
    base = min(r["seconds"] for r in runs["default"])
    print(f"embedded:smollm2, full forward of [16, 256], {args.threads} thread(s), best over {args.rounds} processes:")
    for policy, rs in runs.items():
        best = min(rs, key=lambda r: r["seconds"])
        print(f"  {policy:>8}: {best['seconds']:6.3f} s per pass, {best['seconds'] / base:.2f}x the default's time, "
              f"{best['faults']:9.0f} page faults per pass")


if __name__ == "__main__":
    main()

"""Streaming stages bound heap growth (axwarehouse/heap.py): the allocation pattern of a per-concept loop — a large
transient buffer per concept, a small result kept — must not grow RSS with the number of concepts."""

from __future__ import annotations

import subprocess
import sys

import pytest

LOOP = r"""
import sys, numpy as np, torch
torch.set_num_threads(1)  # one allocating thread: with torch's pool the unbounded growth varied 66-155 MB run to run
sys.path.insert(0, {root!r})
if {bound}:
    from axwarehouse.heap import bound_heap_growth
    assert bound_heap_growth()

def rss():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096

rng = np.random.default_rng(0)
kept = []
for c in range(200):  # "concepts" of varying token counts at d = 2304, as `axw train` reads and fits them
    n = int(rng.integers(200, 1400))
    bits = rng.integers(0, 2**16, size=(n, 2304), dtype=np.uint16)  # a partition's bfloat16 column
    acts = torch.from_numpy((bits.astype(np.uint32) << 16).view(np.float32))  # decoded: 1-13 MB, transient
    h = acts[torch.from_numpy(np.flatnonzero(rng.random(n) > 0.1))]  # the scored rows: another transient copy
    kept.append((h[: len(h) // 2].mean(0) - h.mean(0)).numpy())  # one 9 KB direction kept per concept
    if c == 19:
        start = rss()
print(rss() - start)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc is what the setting tunes")
def test_rss_does_not_grow_with_concepts_once_the_heap_is_bounded():
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[1])

    def growth(bound: bool) -> int:
        out = subprocess.run([sys.executable, "-c", LOOP.format(root=root, bound=bound)], check=True,
                             capture_output=True, text=True)
        return int(out.stdout.strip())

    # 180 concepts after warm-up keep 180 x 9 KB = 1.6 MB of directions; the transient buffers must not add to
    # it. The bound leaves room for allocator noise; with glibc's dynamic threshold the growth is several times it
    bounded = growth(True)
    assert bounded < 32 * 2**20
    assert growth(False) > 2 * bounded + 50 * 2**20  # without it, the same loop fragments the heap


FAULTS = r"""
import resource, sys, torch
sys.path.insert(0, {root!r})
from axwarehouse.heap import bounded_heap

def faults_of_temporaries():
    # a forward pass's pattern: a 16 MiB temporary allocated, written and freed, 20 times
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        torch.empty(4 * 2**20, dtype=torch.float32).fill_(1.0)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

@bounded_heap()
def streaming_stage():
    return faults_of_temporaries()

inside = streaming_stage()
faults_of_temporaries()  # the heap grows to the temporaries' size once
print(inside, faults_of_temporaries())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc is what the setting tunes")
def test_large_temporaries_reuse_memory_once_the_bounded_stage_is_over():
    """The bound is scoped to the streaming stage: inside it every 16 MiB temporary is a fresh mapping (its pages
    faulted in each time), after it the same temporaries reuse heap memory once the heap has grown to their size
    (what a later model stage in the process — `axw demo`'s steering half, the next shard on a Ray worker —
    allocates)."""
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[1])
    out = subprocess.run([sys.executable, "-c", FAULTS.format(root=root)], check=True, capture_output=True, text=True)
    inside, after = map(int, out.stdout.split())
    # (page faults, not pages: with transparent huge pages one fault maps 2 MiB, so compare the two phases)
    assert inside >= 20, (inside, after)  # each temporary faulted in afresh
    assert after * 20 <= inside, (inside, after)  # afterwards not even one temporary's worth in 20 of them

"""Keep a streaming stage's resident memory at one concept's working set, whatever the number of concepts.

Without it, `axw train`'s resident memory grows with every concept although all it keeps per concept is one small
direction (bench/scale.py in BENCHMARKS.md). The cause is glibc's *dynamic* mmap threshold: once a large buffer (a
concept's activation matrix) is freed, glibc raises the threshold to that size, so the next concept's buffers come from the
brk heap instead of fresh mappings. The small objects kept across concepts (each artifact's direction, pending score
rows) then sit between freed large chunks, the heap cannot shrink past them, and the holes rarely fit the next,
differently-sized concept: RSS grows with the concept count. Fixing the threshold at glibc's initial value
(128 KiB) makes every large buffer its own mapping, returned to the OS when freed.

glibc has no Python API for this, so it is one ``mallopt`` call through ctypes; elsewhere (musl, macOS) it does
nothing. The setting is process-wide, so it is scoped: `train`, `latent` and `sae train` run inside
:func:`bounded_heap`, which on exit switches to :func:`reuse_large_buffers`. Under the bounded policy every large
temporary of a model forward is a fresh mapping whose pages the kernel zero-fills again, so forward passes are
much slower than with glibc's default (bench/heap_policy.py in BENCHMARKS.md); left set, it would slow everything
that runs later in the same process (the steering half of `axw demo`, the next shard on a Ray worker, `axw run`'s
next step). `activations` keeps nothing per concept (its batches are written and freed) and runs with glibc's default;
`steer` and `judge`, which run the model and keep only small rows, use :func:`reuse_large_buffers` from the start.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys
from collections.abc import Iterator
from contextlib import contextmanager

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 128 * 1024  # bounded: glibc's initial threshold, kept fixed
# reuse: the largest threshold glibc's dynamic rule reaches on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX, 32 MiB) and the
# trim threshold that rule pairs with it (twice the mmap threshold)
REUSE_MMAP_THRESHOLD = 32 * 1024 * 1024
REUSE_TRIM_THRESHOLD = 2 * REUSE_MMAP_THRESHOLD


@functools.cache
def _mallopt():
    if not sys.platform.startswith("linux"):
        return None
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc
        return None
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt


def bound_heap_growth() -> bool:
    """Make large allocations always mmapped (glibc); True when the setting took effect. Idempotent."""
    mallopt = _mallopt()
    return mallopt is not None and mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1


def reuse_large_buffers() -> bool:
    """Serve allocations below 32 MiB from the heap and keep up to 64 MiB of freed memory there (glibc), so a model
    forward's large temporaries reuse memory instead of faulting in fresh zeroed pages each time; True when the
    setting took effect."""
    mallopt = _mallopt()
    return (mallopt is not None and mallopt(M_MMAP_THRESHOLD, REUSE_MMAP_THRESHOLD) == 1
            and mallopt(M_TRIM_THRESHOLD, REUSE_TRIM_THRESHOLD) == 1)


@contextmanager
def bounded_heap() -> Iterator[bool]:
    """Bounded heap growth while the block (or decorated function) runs, :func:`reuse_large_buffers` after it.
    Yields whether the bound took effect."""
    took = bound_heap_growth()
    try:
        yield took
    finally:
        if took:
            reuse_large_buffers()

"""Keep a streaming stage's resident memory at one concept's working set, whatever the number of concepts.

Measured on the scale benchmark (bench/scale.py): `axw train` grew by ~3.5 MB per DiffMean concept at d = 2304 while
all it kept per concept was one 9 KB direction. The cause is glibc's *dynamic* mmap threshold: once a large buffer (a concept's
activation matrix) is freed, glibc raises the threshold to that size, so the next concept's buffers come from the
brk heap instead of fresh mappings. The small objects kept across concepts (each artifact's direction, pending score
rows) then sit between freed large chunks, the heap cannot shrink past them, and the holes rarely fit the next,
differently-sized concept: RSS grows with the concept count. Fixing the threshold at glibc's initial value
(128 KiB) makes every large buffer its own mapping, returned to the OS when freed.

glibc has no Python API for this, so it is one ``mallopt`` call through ctypes; elsewhere (musl, macOS) it does
nothing. It changes allocation policy for the whole process, which is what a stage process wants. `train`, `latent`
and `sae train` call it; `activations` does not: it keeps nothing per concept (its batches are written and freed),
and a model forward allocates many large temporaries, each of which would then cost a fresh mapping.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number (malloc.h)
MMAP_THRESHOLD = 128 * 1024

_done = False


def bound_heap_growth() -> bool:
    """Make large allocations always mmapped (glibc); True when the setting took effect. Idempotent."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    _done = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    return _done

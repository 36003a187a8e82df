"""How fast this machine is right now: one-thread bfloat16 matrix products for 3 seconds, in GFLOP/s.

Timings on a shared or virtual machine drift by 10-25 % between runs of the same code; printing this next to a
benchmark (or before a test-suite timing) says whether a difference is the code's or the machine's.

    python bench/cpu_probe.py
"""

from __future__ import annotations

import time

import torch


def probe(seconds: float = 3.0, n: int = 1024) -> float:
    """GFLOP/s of repeated ``n x n`` bfloat16 matrix products on one thread."""
    torch.set_num_threads(1)
    a = torch.randn(n, n, dtype=torch.bfloat16)
    b = torch.randn(n, n, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    return 2 * n**3 * count / (time.perf_counter() - start) / 1e9


if __name__ == "__main__":
    print(f"bf16 matmul, 1 thread: {probe():.0f} GFLOP/s")

"""How fast this machine is right now: matrix products in the dtype the stages compute in, in GFLOP/s.

The dtype is what ``--dtype auto`` resolves to on the CPU (bfloat16 where the CPU has AVX512-BF16 or AMX, else
float32: a CPU without native bf16 runs bf16 matmuls two orders of magnitude slower, so a bf16 probe there says
nothing about the stages). Timings on a shared or virtual machine drift by 10-25 % between runs of the same code;
printing this next to a benchmark (or before a test-suite timing) says whether a difference is the code's or the
machine's. ``bench/steer.py`` also divides its throughput by the all-threads rate.

    python bench/cpu_probe.py [--dtype auto|float32|bfloat16] [--seconds 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from axwarehouse.model.loader import resolve_dtype  # noqa: E402


def probe(seconds: float = 3.0, n: int = 1024, dtype: str = "auto", threads: int | None = 1) -> float:
    """GFLOP/s of repeated ``n x n`` matrix products in ``dtype`` (auto = the stages' CPU dtype) on ``threads``
    threads (None = torch's default, every core); the thread setting is restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    try:
        kind = getattr(torch, resolve_dtype(dtype, "cpu"))
        a = torch.randn(n, n, dtype=kind)
        b = torch.randn(n, n, dtype=kind)
        for _ in range(3):
            a @ b
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            a @ b
            count += 1
        return 2 * n**3 * count / (time.perf_counter() - start) / 1e9
    finally:
        torch.set_num_threads(before)


def cpu_model() -> tuple[str, str]:
    """The CPU's model name and its SIMD flags that matter for matmuls (from /proc/cpuinfo; empty elsewhere)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown", ""
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                "unknown")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    keep = [f for f in flags if f.startswith(("avx", "amx", "fma")) or f in ("f16c",)]
    return name, " ".join(sorted(set(keep)))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    name, flags = cpu_model()
    dt = resolve_dtype(args.dtype, "cpu")
    print(f"{name} ({flags})")
    print(f"{dt} matmul, 1 thread: {probe(args.seconds, dtype=dt):.0f} GFLOP/s")
    print(f"{dt} matmul, {torch.get_num_threads()} threads: {probe(args.seconds, dtype=dt, threads=None):.0f} GFLOP/s")

"""Statistics the pages and `axw compare` show: bootstrap confidence intervals over concepts, paired tests.

Concepts are the unit of resampling (AxBench's scores are unweighted means over concepts), so a leaderboard CI
says how much the mean would move with another draw of concepts from the same population.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

N_BOOT = 2000
SEED = 0


def bootstrap_mean_ci(values: np.ndarray, n_boot: int = N_BOOT, level: float = 0.95,
                      seed: int = SEED) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of ``values`` (one per concept); NaNs dropped; (nan, nan) if empty.

    All resamples are drawn at once (an [n_boot, n] index matrix), so a 500-concept leaderboard costs one gather.
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return float("nan"), float("nan")
    if len(v) == 1:
        return float(v[0]), float(v[0])
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(n_boot, len(v)))].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


@dataclass(frozen=True)
class PairedTest:
    """Paired comparison of two systems over the same concepts (b − a)."""

    n: int
    mean_a: float
    mean_b: float
    mean_delta: float
    ci_low: float  # bootstrap CI of the mean delta
    ci_high: float
    wins: int  # concepts where b > a
    losses: int
    ties: int
    wilcoxon_p: float  # two-sided Wilcoxon signed-rank (zero deltas dropped, the Wilcoxon convention)
    t_p: float  # two-sided paired t-test


def paired_test(a: np.ndarray, b: np.ndarray, tie_eps: float = 1e-9) -> PairedTest:
    """Paired significance of b − a over aligned per-concept values (pairs with a NaN are dropped)."""
    from scipy import stats

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep], b[keep]
    d = b - a
    n = len(d)
    if n == 0:
        nan = float("nan")
        return PairedTest(0, nan, nan, nan, nan, nan, 0, 0, 0, nan, nan)
    lo, hi = bootstrap_mean_ci(d)
    nonzero = np.abs(d) > tie_eps
    wilcoxon_p = float(stats.wilcoxon(d[nonzero]).pvalue) if nonzero.sum() >= 1 else 1.0
    if n >= 2 and np.std(d) > 0:
        t_p = float(stats.ttest_rel(b, a).pvalue)
    else:
        t_p = 1.0 if not nonzero.any() else 0.0  # constant non-zero delta: no variance, the difference is exact
    return PairedTest(n, float(a.mean()), float(b.mean()), float(d.mean()), lo, hi,
                      int((d > tie_eps).sum()), int((d < -tie_eps).sum()), int((~nonzero).sum()),
                      wilcoxon_p, t_p)

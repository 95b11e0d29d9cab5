"""Small statistics for success rates."""

from __future__ import annotations

import math


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion.

    Better behaved than the normal approximation at small ``n`` and rates near 0 or 1 (it never
    leaves [0, 1]). Returns ``(low, high)``; ``(0.0, 1.0)`` when ``n == 0``.
    """
    if n == 0:
        return 0.0, 1.0
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, n], got {successes} of {n}")
    z = _z(confidence)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if successes == 0 else max(0.0, centre - half)  # exact at the ends (no rounding residue)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def _z(confidence: float) -> float:
    """Two-sided standard-normal quantile, from the inverse error function (no SciPy needed)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    from statistics import NormalDist

    return NormalDist().inv_cdf(0.5 + confidence / 2)


def mean_interval(values, confidence: float = 0.95, *, resamples: int = 4000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of ``values`` and its percentile-bootstrap interval: ``(mean, low, high)``.

    Used for per-episode measurements (mean end-effector height, speed, …). For paired
    comparisons (same seeds under two settings) pass the per-episode differences. The bootstrap is
    seeded, so the same numbers give the same interval; ``(mean, mean, mean)`` for a single value
    and ``(nan, nan, nan)`` for none.
    """
    import numpy as np

    x = np.asarray(list(values), dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if x.size == 1:
        return mean, mean, mean
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, (resamples, x.size))].mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return mean, float(low), float(high)

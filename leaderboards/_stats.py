"""Small statistics used by the leaderboard and compare: Wilson CI, paired bootstrap (CI and test),
Wilcoxon signed-rank, McNemar, Holm."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from harness.core.stats import Z95, wilson_interval

__all__ = ["Z95", "holm", "mcnemar", "paired_bootstrap_ci", "pareto_front", "wilson_interval"]


def paired_bootstrap_ci(
    baseline: Sequence[float] | np.ndarray,
    candidate: Sequence[float] | np.ndarray,
    *,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Mean of (candidate − baseline) over paired items and its percentile bootstrap CI (seeded)."""
    base = np.asarray(baseline, dtype=float)
    cand = np.asarray(candidate, dtype=float)
    if base.shape != cand.shape:
        raise ValueError(f"paired samples differ in length: {base.shape} vs {cand.shape}")
    if base.size == 0:
        return (math.nan, math.nan, math.nan)
    diff = cand - base
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, diff.size, size=(resamples, diff.size))
    means = diff[idx].mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return (float(diff.mean()), float(low), float(high))


def paired_bootstrap_pvalue(
    baseline: Sequence[float] | np.ndarray,
    candidate: Sequence[float] | np.ndarray,
    *,
    resamples: int = 2000,
    seed: int = 0,
) -> float:
    """Two-sided p-value of "mean(candidate − baseline) = 0" by the paired bootstrap: the differences
    are shifted to mean 0 (the null) and resampled; p = share of resampled means at least as far
    from 0 as the observed one (with the +1 correction, so never exactly 0)."""
    diff = np.asarray(candidate, dtype=float) - np.asarray(baseline, dtype=float)
    if diff.size == 0:
        return 1.0
    observed = abs(float(diff.mean()))
    centred = diff - diff.mean()
    if observed == 0.0 or not centred.any():
        return 1.0 if observed == 0.0 else 0.0
    rng = np.random.default_rng(seed)
    means = centred[rng.integers(0, diff.size, size=(resamples, diff.size))].mean(axis=1)
    return float((1 + np.sum(np.abs(means) >= observed - 1e-15)) / (resamples + 1))


def wilcoxon_signed_rank(baseline: Sequence[float] | np.ndarray, candidate: Sequence[float] | np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of the paired differences (zero differences dropped;
    exact for small samples, as scipy chooses); 1.0 when every pair is tied."""
    diff = np.asarray(candidate, dtype=float) - np.asarray(baseline, dtype=float)
    if not np.any(diff != 0):
        return 1.0
    from scipy.stats import wilcoxon

    return float(wilcoxon(diff, zero_method="wilcox", alternative="two-sided").pvalue)


def mcnemar(b: int, c: int, *, method: str = "auto") -> tuple[float, str]:
    """Two-sided McNemar p-value from the discordant counts b (0→1) and c (1→0).

    ``exact``: binomial test on min(b, c) of b + c at p = ½; ``chi2``: χ² with continuity
    correction; ``auto``: exact below 25 discordant pairs, χ² above. Returns (p, method used).
    """
    n = b + c
    if n == 0:
        return (1.0, "exact")
    if method == "auto":
        method = "exact" if n < 25 else "chi2"
    if method == "exact":
        from scipy.stats import binomtest

        return (float(binomtest(min(b, c), n, 0.5).pvalue), "exact")
    if method == "chi2":
        from scipy.stats import chi2

        stat = (abs(b - c) - 1) ** 2 / n
        return (float(chi2.sf(stat, 1)), "chi2")
    raise ValueError(f"McNemar method {method!r}; expected exact, chi2 or auto")


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (monotone, capped at 1), in the input order."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [1.0] * m
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[index]))
        adjusted[index] = running
    return adjusted


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated when minimising x (harmfulness) and maximising y (utility)."""
    front = []
    for i, (x, y) in enumerate(points):
        if math.isnan(x) or math.isnan(y):
            continue
        dominated = any(
            (x2 <= x and y2 >= y) and (x2 < x or y2 > y)
            for j, (x2, y2) in enumerate(points)
            if j != i and not (math.isnan(x2) or math.isnan(y2))
        )
        if not dominated:
            front.append(i)
    return front

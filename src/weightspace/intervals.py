"""Intervals for the headline numbers, and the rule that turns an interval into a verdict.

Every interval is a 95% percentile bootstrap with a fixed seed (the same numbers on a rerun):
over the models of each group for PB, over the units of a comparison (pairs, directions,
targets) for the region's differences, over targets and the seeds within them for the centroid's
gains. A difference whose interval holds zero is a tie.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

LEVEL = 0.95
RESAMPLES = 2000


def bootstrap_interval(statistic: Callable[..., float], samples: Sequence[Sequence[float]],
                       resamples: int = RESAMPLES, seed: int = 0, level: float = LEVEL) -> tuple[float, float]:
    """Percentile interval of statistic(*samples), each sample resampled with replacement on its own."""
    arrays = [np.asarray(s, dtype=float) for s in samples]
    if any(a.size == 0 for a in arrays):
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    values = np.array([statistic(*(a[rng.integers(0, a.size, a.size)] for a in arrays)) for _ in range(resamples)])
    return percentile_interval(values, level)


def clustered_mean_interval(groups: Sequence[Sequence[float]], resamples: int = RESAMPLES, seed: int = 0,
                            level: float = LEVEL) -> tuple[float, float]:
    """Interval of the mean of group means: resample the groups, then the values inside each.

    E.g. a gain per (target, seed): the interval covers both which targets were chosen and the
    seeds' noise within them. With a single group it is the bootstrap of that group's mean.
    """
    arrays = [np.asarray(g, dtype=float) for g in groups if len(g)]
    if not arrays:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    values = np.empty(resamples)
    for i in range(resamples):
        chosen = rng.integers(0, len(arrays), len(arrays)) if len(arrays) > 1 else [0]
        values[i] = np.mean([arrays[j][rng.integers(0, arrays[j].size, arrays[j].size)].mean() for j in chosen])
    return percentile_interval(values, level)


def clustered_mean(groups: Sequence[Sequence[float]], resamples: int = RESAMPLES, seed: int = 0,
                   level: float = LEVEL) -> tuple[float, float, float]:
    """(mean of the group means, lo, hi): the value clustered_mean_interval is the interval of."""
    means = [float(np.mean(g)) for g in groups if len(g)]
    lo, hi = clustered_mean_interval(groups, resamples, seed, level)
    return (float(np.mean(means)) if means else float("nan")), lo, hi


def t_interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float]:
    """Student-t interval of the mean (NaN for fewer than two values): for a few seeds' paired differences."""
    from scipy.stats import t

    x = np.asarray(values, dtype=float)
    if x.size < 2:
        return float("nan"), float("nan")
    half = t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size)
    return float(x.mean() - half), float(x.mean() + half)


def normal_interval(value: float, se: float, level: float = LEVEL) -> tuple[float, float]:
    from scipy.stats import norm

    half = norm.ppf(0.5 + level / 2) * se
    return float(value - half), float(value + half)


def verdict(lo: float, hi: float, threshold: float, direction: str) -> str:
    """'holds' / 'does not hold' / 'cannot tell' for a claim that a value lies above or below threshold.

    above: holds if the whole interval is above the threshold, does not hold if it is wholly at or
    below it; below: the mirror image. An interval that straddles the threshold cannot tell.
    """
    if np.isnan(lo) or np.isnan(hi):
        return "cannot tell"
    if direction == "above":
        return "holds" if lo > threshold else "does not hold" if hi <= threshold else "cannot tell"
    if direction == "below":
        return "holds" if hi < threshold else "does not hold" if lo >= threshold else "cannot tell"
    raise ValueError(f"direction '{direction}': expected above or below")


def format_interval(value: float, lo: float, hi: float, digits: int = 1) -> str:
    """'96.3 [88.9, 100.0]', or the value alone where there is no interval."""
    if np.isnan(value):
        return "-"
    if np.isnan(lo) or np.isnan(hi):
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def percentile_interval(values, level: float = LEVEL) -> tuple[float, float]:
    """The central `level` range of a sample of values (resampled statistics, or runs at many random states)."""
    lo, hi = np.percentile(np.asarray(values, dtype=float), [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)

"""Statistics the loop reports with error bars: proportion intervals, agreement, drift tests.

Pure numpy/scipy, no Dagster. Every function accepts scalars or numpy arrays (broadcast), so
a whole trade-off grid of candidate thresholds is evaluated in one call.

* :func:`wilson_interval` and :func:`clopper_pearson_interval`: two-sided intervals for a
  binomial proportion ``k / n`` (the false-negative rate of auto-approval, a reviewer's
  accuracy on gold items). Wilson is the default: close to nominal coverage and never outside
  [0, 1]; Clopper-Pearson is exact (conservative). With ``n == 0`` the interval is [0, 1]:
  no evidence, no claim. Non-integer ``k`` and ``n`` are allowed (an effective sample size
  from weighted data, see :func:`weighted_proportion`).
* :func:`cohens_kappa`: chance-corrected agreement of two raters on the same items.
* :func:`proportion_increase_pvalue`: one-sided Fisher exact test that a recent proportion is
  higher than a baseline (a jump in a category's correction rate).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from scipy import stats as _stats

__all__ = [
    "INTERVAL_METHODS",
    "z_value",
    "wilson_interval",
    "clopper_pearson_interval",
    "proportion_interval",
    "zero_failure_sample_size",
    "effective_sample_size",
    "weighted_proportion",
    "cohens_kappa",
    "proportion_increase_pvalue",
    "proportion_difference_pvalue",
    "linear_slope",
]

IntervalMethod = Literal["wilson", "clopper-pearson"]
INTERVAL_METHODS: tuple[str, ...] = ("wilson", "clopper-pearson")


def z_value(confidence: float = 0.95) -> float:
    """Two-sided standard normal quantile: 1.959964 for 95 %."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return float(_stats.norm.ppf(0.5 + confidence / 2.0))


def _counts(k, n) -> tuple[np.ndarray, np.ndarray]:
    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    if np.any(n < 0) or np.any(k < 0) or np.any(k > n + 1e-9):
        raise ValueError("need 0 <= k <= n")
    return k, n


def _unwrap(low: np.ndarray, high: np.ndarray):
    if low.ndim == 0:
        return float(low), float(high)
    return low, high


def wilson_interval(k, n, confidence: float = 0.95):
    """Wilson score interval for ``k`` successes in ``n`` trials; (0, 1) where ``n == 0``.

    centre = (k + z^2/2) / (n + z^2),  half-width = z / (n + z^2) * sqrt(k (n - k) / n + z^2 / 4).
    """
    k, n = _counts(k, n)
    z = z_value(confidence)
    z2 = z * z
    with np.errstate(divide="ignore", invalid="ignore"):
        centre = (k + z2 / 2.0) / (n + z2)
        half = z / (n + z2) * np.sqrt(np.maximum(k * (n - k) / n, 0.0) + z2 / 4.0)
        low = np.where(n > 0, np.clip(centre - half, 0.0, 1.0), 0.0)
        high = np.where(n > 0, np.clip(centre + half, 0.0, 1.0), 1.0)
    # exact ends: no successes -> the lower bound is 0, all successes -> the upper bound is 1
    low = np.where((n > 0) & (k <= 0), 0.0, low)
    high = np.where((n > 0) & (k >= n), 1.0, high)
    return _unwrap(low, high)


def clopper_pearson_interval(k, n, confidence: float = 0.95):
    """Exact (Clopper-Pearson) interval from beta quantiles; (0, 1) where ``n == 0``.

    low = Beta(alpha/2; k, n - k + 1), high = Beta(1 - alpha/2; k + 1, n - k), alpha = 1 - confidence.
    """
    k, n = _counts(k, n)
    alpha = 1.0 - confidence
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    with np.errstate(divide="ignore", invalid="ignore"):
        low = np.where(k > 0, _stats.beta.ppf(alpha / 2.0, np.maximum(k, 1e-12), n - k + 1.0), 0.0)
        high = np.where(k < n, _stats.beta.ppf(1.0 - alpha / 2.0, k + 1.0, np.maximum(n - k, 1e-12)), 1.0)
    low = np.where(n > 0, np.nan_to_num(low, nan=0.0), 0.0)
    high = np.where(n > 0, np.nan_to_num(high, nan=1.0), 1.0)
    return _unwrap(low, high)


def proportion_interval(k, n, method: str = "wilson", confidence: float = 0.95):
    """The interval of ``method`` ("wilson" or "clopper-pearson")."""
    if method == "wilson":
        return wilson_interval(k, n, confidence)
    if method in ("clopper-pearson", "clopper_pearson", "exact"):
        return clopper_pearson_interval(k, n, confidence)
    raise ValueError(f"unknown interval method {method!r}; expected one of {', '.join(INTERVAL_METHODS)}")


def zero_failure_sample_size(target: float, method: str = "wilson", confidence: float = 0.95) -> int:
    """The fewest items, all passing, whose upper bound is at most ``target``.

    How much clean evidence a threshold needs before it may auto-approve anything:
    Wilson with k = 0 gives high = z^2 / (n + z^2) <= target  <=>  n >= z^2 (1 - target) / target;
    Clopper-Pearson gives high = 1 - (alpha/2)^(1/n) <= target  <=>  n >= ln(alpha/2) / ln(1 - target).
    """
    if not 0.0 < target < 1.0:
        raise ValueError(f"target must be in (0, 1), got {target}")
    if method == "wilson":
        z2 = z_value(confidence) ** 2
        return max(1, math.ceil(z2 * (1.0 - target) / target - 1e-9))
    alpha = 1.0 - confidence
    return max(1, math.ceil(math.log(alpha / 2.0) / math.log(1.0 - target) - 1e-9))


def effective_sample_size(weights) -> float:
    """Kish's effective sample size (sum w)^2 / sum w^2 of weighted observations."""
    w = np.asarray(weights, dtype=np.float64)
    total = w.sum()
    squares = (w * w).sum()
    return float(total * total / squares) if squares > 0 else 0.0


def weighted_proportion(y, weights) -> tuple[float, float, float]:
    """Weighted share of ``y`` (0/1) and the effective counts ``(k_eff, n_eff)`` to put in an interval.

    Returns ``(p, k_eff, n_eff)`` with p = sum(w y) / sum(w), n_eff = Kish's effective sample
    size and k_eff = p * n_eff. With equal weights this is exactly (k/n, k, n).
    """
    y = np.asarray(y, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    total = w.sum()
    if total <= 0:
        return float("nan"), 0.0, 0.0
    p = float((w * y).sum() / total)
    n_eff = effective_sample_size(w)
    return p, p * n_eff, n_eff


def cohens_kappa(first, second) -> float:
    """Cohen's kappa of two raters' labels on the same items: (p_o - p_e) / (1 - p_e).

    p_o is the observed agreement, p_e the agreement expected by chance from each rater's own
    label frequencies. NaN without items; when chance agreement is already perfect (both
    raters always gave the same single label) kappa is 1.0 if they agree, else NaN.
    """
    a = np.asarray(first, dtype=object)
    b = np.asarray(second, dtype=object)
    if a.shape != b.shape:
        raise ValueError(f"raters labelled different numbers of items: {a.shape} vs {b.shape}")
    n = a.size
    if n == 0:
        return float("nan")
    labels = sorted(set(a.tolist()) | set(b.tolist()), key=str)
    p_o = float(np.mean(a == b))
    p_e = sum(float(np.mean(a == label)) * float(np.mean(b == label)) for label in labels)
    if p_e >= 1.0 - 1e-12:
        return 1.0 if p_o >= 1.0 - 1e-12 else float("nan")
    return (p_o - p_e) / (1.0 - p_e)


def proportion_increase_pvalue(k_recent: int, n_recent: int, k_base: int, n_base: int) -> float:
    """One-sided Fisher exact p-value that the recent proportion exceeds the baseline's (1.0 without data)."""
    if n_recent <= 0 or n_base <= 0:
        return 1.0
    table = [[int(k_recent), int(n_recent - k_recent)], [int(k_base), int(n_base - k_base)]]
    return float(_stats.fisher_exact(table, alternative="greater").pvalue)


def proportion_difference_pvalue(k1: int, n1: int, k2: int, n2: int) -> float:
    """Two-sided Fisher exact p-value that two proportions differ (1.0 without data)."""
    if n1 <= 0 or n2 <= 0:
        return 1.0
    table = [[int(k1), int(n1 - k1)], [int(k2), int(n2 - k2)]]
    return float(_stats.fisher_exact(table, alternative="two-sided").pvalue)


def linear_slope(x, y) -> float:
    """Least-squares slope of ``y`` on ``x`` (NaN with fewer than 3 points or constant ``x``)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if x.size < 3 or np.ptp(x) == 0:
        return float("nan")
    xc = x - x.mean()
    return float((xc * (y - y.mean())).sum() / (xc * xc).sum())

"""Bootstrap confidence intervals and paired bootstrap tests over per-item scores (scipy.stats.bootstrap)."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

CONFIDENCE = 0.95
DEFAULT_RESAMPLES = 10_000


def _clean(values: Sequence[float]) -> np.ndarray:
    arr = np.asarray([v for v in values if v is not None], dtype=float)
    return arr[~np.isnan(arr)]


def _bootstrap_means(x: np.ndarray, resamples: int, seed: int):
    from scipy.stats import bootstrap
    return bootstrap((x,), np.mean, n_resamples=resamples, confidence_level=CONFIDENCE,
                     method="percentile", random_state=np.random.default_rng(seed), vectorized=True)


def mean_ci(values: Sequence[float], resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> dict:
    """{mean, stderr, ci_low, ci_high, n}: 95 % percentile-bootstrap CI of the mean (None when n < 2)."""
    x = _clean(values)
    n = len(x)
    if n == 0:
        return {"mean": None, "stderr": None, "ci_low": None, "ci_high": None, "n": 0}
    mean = float(x.mean())
    if n < 2 or np.all(x == x[0]):
        spread = None if n < 2 else 0.0
        return {"mean": mean, "stderr": spread, "ci_low": None if n < 2 else mean,
                "ci_high": None if n < 2 else mean, "n": n}
    res = _bootstrap_means(x, resamples, seed)
    return {"mean": mean, "stderr": float(res.standard_error), "ci_low": float(res.confidence_interval.low),
            "ci_high": float(res.confidence_interval.high), "n": n}


def paired_delta(a: Sequence[float], b: Sequence[float], resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> dict:
    """Mean of a - b over the same items, its 95 % CI, and a two-sided bootstrap p-value for 'no difference'.

    The p-value inverts the percentile interval: it is the smallest alpha at which the (1 - alpha) interval
    excludes 0, so p < 0.05 when the reported 95 % CI excludes 0 (up to the +1 correction, 1 resample in 10 000).
    """
    if len(a) != len(b):
        raise ValueError(f"paired_delta: {len(a)} vs {len(b)} items; pairs must cover the same items")
    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None
             and not (math.isnan(x) or math.isnan(y))]
    d = np.asarray([x - y for x, y in pairs], dtype=float)
    n = len(d)
    if n < 2:
        return {"delta": float(d.mean()) if n else None, "ci_low": None, "ci_high": None, "p_value": None, "n": n}
    if np.all(d == d[0]):
        return {"delta": float(d[0]), "ci_low": float(d[0]), "ci_high": float(d[0]),
                "p_value": 1.0 if d[0] == 0 else 0.0, "n": n}
    res = _bootstrap_means(d, resamples, seed)
    boots = res.bootstrap_distribution
    tail = min(np.mean(boots <= 0), np.mean(boots >= 0))
    p = min(1.0, 2 * (tail * len(boots) + 1) / (len(boots) + 1))
    return {"delta": float(d.mean()), "ci_low": float(res.confidence_interval.low),
            "ci_high": float(res.confidence_interval.high), "p_value": float(p), "n": n}


def fdr_adjust(p_values: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (q) for a family of tests, in the input order (scipy)."""
    from scipy.stats import false_discovery_control
    if not p_values:
        return []
    return [float(q) for q in false_discovery_control(np.asarray(p_values, dtype=float), method="bh")]


def spearman(xs: list[float], ys: list[float]) -> dict:
    """Spearman's rho with its p-value; None when fewer than 3 pairs or one side is constant (no ranking)."""
    from scipy.stats import spearmanr
    n = len(xs)
    if n < 3 or len(set(xs)) < 2 or len(set(ys)) < 2:
        return {"rho": None, "p_value": None, "n": n}
    res = spearmanr(xs, ys)
    return {"rho": float(res.statistic), "p_value": float(res.pvalue), "n": n}

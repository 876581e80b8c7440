"""Bootstrap confidence intervals (scipy.stats.bootstrap) and paired tests over per-item scores.

Paired comparisons report a percentile-bootstrap CI of the mean difference and a sign-flip permutation p-value.
The bootstrap alone is too eager where the differences are sparse and discrete, which is the shape of key-fact
recall between close systems (a handful of items differ by one fact): 4 of 301 items better by one fact and none
worse gives a bootstrap interval that excludes 0, while the exact sign-flip test gives p = 0.125. A difference
counts as significant only when both agree (`significant`), which holds the 5 % level at that shape (tested).
"""

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

    return bootstrap(
        (x,),
        np.mean,
        n_resamples=resamples,
        confidence_level=CONFIDENCE,
        method="percentile",
        random_state=np.random.default_rng(seed),
        vectorized=True,
    )


def mean_ci(values: Sequence[float], resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> dict:
    """{mean, stderr, ci_low, ci_high, n}: 95 % percentile-bootstrap CI of the mean (None when n < 2)."""
    x = _clean(values)
    n = len(x)
    if n == 0:
        return {"mean": None, "stderr": None, "ci_low": None, "ci_high": None, "n": 0}
    mean = float(x.mean())
    if n < 2 or np.all(x == x[0]):
        spread = None if n < 2 else 0.0
        return {
            "mean": mean,
            "stderr": spread,
            "ci_low": None if n < 2 else mean,
            "ci_high": None if n < 2 else mean,
            "n": n,
        }
    res = _bootstrap_means(x, resamples, seed)
    return {
        "mean": mean,
        "stderr": float(res.standard_error),
        "ci_low": float(res.confidence_interval.low),
        "ci_high": float(res.confidence_interval.high),
        "n": n,
    }


EXACT_SIGN_FLIP_MAX = 16  # up to 2^16 sign patterns are enumerated; more non-zero differences are sampled


def sign_flip_p(d: np.ndarray, resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> float:
    """Two-sided paired permutation test of 'no difference': under the null every item's difference is as
    likely positive as negative, so flip signs and count sums at least as extreme. Exact for few non-zero
    differences, Monte Carlo (with the +1 correction) otherwise."""
    nz = d[d != 0]
    k = len(nz)
    if k == 0:
        return 1.0
    observed = abs(nz.sum()) - 1e-12 * max(1.0, abs(nz).sum())
    if k <= EXACT_SIGN_FLIP_MAX:
        signs = 1 - 2 * ((np.arange(2**k)[:, None] >> np.arange(k)) & 1)
        return float(np.mean(np.abs(signs @ nz) >= observed))
    rng = np.random.default_rng(seed)
    flips = rng.choice(np.array([-1.0, 1.0]), size=(resamples, k)) @ nz
    return float((1 + np.sum(np.abs(flips) >= observed)) / (resamples + 1))


def paired_delta(a: Sequence[float], b: Sequence[float], resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> dict:
    """Mean of a - b over the same items, its 95 % percentile-bootstrap CI, a two-sided sign-flip permutation
    p-value for 'no difference', and `significant`: p < 0.05 and the CI excludes 0 (the rule gates and the
    champion choice use)."""
    if len(a) != len(b):
        raise ValueError(f"paired_delta: {len(a)} vs {len(b)} items; pairs must cover the same items")
    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None and not (math.isnan(x) or math.isnan(y))]
    d = np.asarray([x - y for x, y in pairs], dtype=float)
    n = len(d)
    if n < 2:
        return {
            "delta": float(d.mean()) if n else None,
            "ci_low": None,
            "ci_high": None,
            "p_value": None,
            "n": n,
            "significant": False,
        }
    p = sign_flip_p(d, resamples, seed)
    if np.all(d == d[0]):
        low = high = float(d[0])
    else:
        res = _bootstrap_means(d, resamples, seed)
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return {
        "delta": float(d.mean()),
        "ci_low": low,
        "ci_high": high,
        "p_value": p,
        "n": n,
        "n_differing": int(np.count_nonzero(d)),
        "test": "sign-flip permutation",
        "significant": bool(p < 1 - CONFIDENCE and (low > 0 or high < 0)),
    }


def verdict(row: dict) -> int:
    """+1 a better, -1 a worse, 0 not distinguishable, for a paired_delta row (older rows: by their CI)."""
    if row.get("significant") is None:
        return 1 if row["ci_low"] > 0 else -1 if row["ci_high"] < 0 else 0
    return (1 if row["delta"] > 0 else -1) if row["significant"] else 0


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

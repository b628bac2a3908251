"""Latency statistics, computed the same way by `bnnbench run` and the coordinator.

Besides the usual summary (mean, median, stdev, p90) a :class:`Stats` carries

* ``cv`` — the coefficient of variation, stdev / mean (the classical one, not a MAD-based
  spread: it is informational; the validity bar is the median's confidence interval);
* ``ci_low_ms`` / ``ci_high_ms`` — a distribution-free confidence interval of the median from
  order statistics: the number of samples below the true median is Binomial(n, 1/2), so
  ``[x_(r), x_(n-r+1)]`` (1-based, sorted) covers it with probability ``1 − 2·P(B ≤ r−1)``.
  ``r`` is the largest with a coverage of at least 95 %; ``ci_level`` is that exact
  coverage. Below 6 samples no interval reaches 95 % (``[min, max]`` covers with
  ``1 − 2^(1−n)``: 75 % at 3, 93.75 % at 5): the interval is then ``[min, max]`` and
  ``ci_level`` says how much less it is.

Every sum is taken on samples scaled by a power of two (exact), so huge finite samples
(``[1e308, 1e308]``) give finite statistics instead of an overflow.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from functools import lru_cache

from bnnbench.schemas import Stats

CI_CONFIDENCE = 0.95

# up to this many samples the binomial tail is summed exactly (integers); beyond, in log space
_EXACT_TAIL_MAX_N = 2000


def median_sorted(xs: Sequence[float]) -> float:
    """Median of sorted values; the two middle ones are halved before adding (no overflow,
    and the same rounding as (a + b) / 2 wherever that does not overflow)."""
    n = len(xs)
    if n == 0:
        raise ValueError("no samples")
    mid = n // 2
    if n % 2:
        return float(xs[mid])
    return xs[mid - 1] / 2 + xs[mid] / 2


@lru_cache(maxsize=1024)
def median_ci_rank(n: int, confidence: float = CI_CONFIDENCE) -> tuple[int, float]:
    """``(r, level)``: the interval ``[x_(r), x_(n-r+1)]`` (1-based order statistics) covers
    the median of any continuous distribution with probability ``level`` — the largest ``r``
    with ``level >= confidence``, or ``r = 1`` with its (smaller) level where none reaches it
    (``n < 6`` at 95 %)."""
    if n < 1:
        raise ValueError("no samples")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    alpha_half = (1 - confidence) / 2
    # cdf[j] = P(B <= j), B ~ Binomial(n, 1/2), for j up to the first one beyond alpha/2
    cdf = 0.0
    r = 0
    tail_at_r = 0.0  # P(B <= r - 1) for the r found so far
    if n <= _EXACT_TAIL_MAX_N:
        total = 1 << n
        acc = 0
        for j in range(n // 2 + 1):
            acc += math.comb(n, j)
            cdf = acc / total  # int / int: correctly rounded
            if cdf > alpha_half:
                break
            r, tail_at_r = j + 1, cdf
    else:
        log_half_n = n * math.log(0.5)
        lg_n1 = math.lgamma(n + 1)
        for j in range(n // 2 + 1):
            cdf += math.exp(lg_n1 - math.lgamma(j + 1) - math.lgamma(n - j + 1) + log_half_n)
            if cdf > alpha_half:
                break
            r, tail_at_r = j + 1, cdf
    if r == 0:  # not even [min, max] reaches the confidence asked for
        return 1, max(0.0, 1.0 - 2.0 * 0.5**n) if n > 1 else 0.0
    return r, 1.0 - 2.0 * tail_at_r


def median_ci(xs_sorted: Sequence[float]) -> tuple[float, float, float]:
    """``(low, high, level)`` of the median of sorted samples (see :func:`median_ci_rank`)."""
    n = len(xs_sorted)
    r, level = median_ci_rank(n)
    return float(xs_sorted[r - 1]), float(xs_sorted[n - r]), level


def _mean_stdev(xs: Sequence[float]) -> tuple[float, float]:
    """Mean and sample stdev of positive finite values, computed on them scaled by 2^-e
    (exact) so that neither the sum nor the squares overflow."""
    top = max(abs(x) for x in xs)
    if top == 0 or not math.isfinite(top):
        mean = statistics.fmean(xs)
        return mean, statistics.stdev(xs) if len(xs) > 1 else 0.0
    e = math.frexp(top)[1]
    scaled = [math.ldexp(x, -e) for x in xs]  # in [-1, 1]: sums of n of them stay finite
    mean = math.ldexp(statistics.fmean(scaled), e)
    stdev = math.ldexp(statistics.stdev(scaled), e) if len(xs) > 1 else 0.0
    return mean, stdev


def rel_ci_halfwidth(st: Stats) -> float:
    """How far the median's confidence interval reaches from the median, relative to it (the
    larger side: the interval need not be symmetric); inf for a zero median or old stats
    without an interval."""
    if st.ci_low_ms is None or st.ci_high_ms is None or st.median_ms <= 0:
        return math.inf
    # each difference is of two positive finite values: no overflow
    return max(st.median_ms - st.ci_low_ms, st.ci_high_ms - st.median_ms) / st.median_ms


def summarize(samples_ms: Sequence[float]) -> Stats:
    if not samples_ms:
        raise ValueError("no samples")
    xs = sorted(float(x) for x in samples_ms)
    bad = next((x for x in xs if not math.isfinite(x)), None)
    if bad is not None:
        raise ValueError(f"samples must be finite, got {bad!r}")
    n = len(xs)
    # nearest-rank 90th percentile: an observed sample, no interpolation
    p90 = xs[min(n - 1, max(0, -(-9 * n // 10) - 1))]
    mean, stdev = _mean_stdev(xs)
    lo, hi, level = median_ci(xs)
    return Stats(
        n=n,
        mean_ms=mean,
        median_ms=median_sorted(xs),
        min_ms=xs[0],
        max_ms=xs[-1],
        stdev_ms=stdev,
        p90_ms=p90,
        cv=stdev / mean if mean > 0 else None,
        ci_low_ms=lo,
        ci_high_ms=hi,
        ci_level=level,
    )

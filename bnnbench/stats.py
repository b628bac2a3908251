"""Latency statistics, computed the same way by `bnnbench run` and the coordinator."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from bnnbench.schemas import Stats


def summarize(samples_ms: Sequence[float]) -> Stats:
    if not samples_ms:
        raise ValueError("no samples")
    xs = sorted(float(x) for x in samples_ms)
    n = len(xs)
    # nearest-rank 90th percentile: an observed sample, no interpolation
    p90 = xs[min(n - 1, max(0, -(-9 * n // 10) - 1))]
    return Stats(
        n=n,
        mean_ms=statistics.fmean(xs),
        median_ms=statistics.median(xs),
        min_ms=xs[0],
        max_ms=xs[-1],
        stdev_ms=statistics.stdev(xs) if n > 1 else 0.0,
        p90_ms=p90,
    )

"""Two sets of measurements side by side: two devices, two libraries or two campaigns.

A side is chosen by a **selector**, ``key=value`` pairs joined by commas::

    device=3            a device id, name or label (``device=pi4``)
    library=native      native | lce | tflite | dabnn
    model=12            one model id
    jobs=120-180        a job id range (one ``bnnbench submit``: a campaign), or one id
    after=2026-11-01    results posted at or after this ISO date/time (UTC unless given)
    before=2026-11-15   results posted before it

Each side holds the latest valid result per (device, library, model, threads) among those
its selector admits — the table's rule (no emulated device, no artifact that failed its
fidelity check). Cells are matched on (arch, algorithm, threads) and on device and library
unless both selectors name one (``device=3`` vs ``device=5``: the devices are what is
compared; ``device=3`` vs ``library=lce``: LCE on device 3). Of several models with the same
labels in one cell, the latest result counts.

Per matched cell: both medians, ``ratio`` = median B / median A (> 1: B is slower), and the
p-value of the difference from the raw samples: a two-sided **Mann–Whitney U test** (scipy is
not a dependency) whose p-value comes from permutations of the pooled samples (Monte Carlo,
fixed seed, ``p = (1 + hits) / (1 + resamples)``): distribution-free, exact in the limit of
resamples, ties handled by midranks. With 3 samples a side no split can give p below 0.1:
few samples never look significant. ``p_holm``: Holm's adjustment over all matched cells,
for reading many cells at once; ``significant`` uses it.

This module is pure (numpy only, imported lazily); coordinator.compare reads the cells.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bnnbench.schemas import INT64_MAX, Library
from bnnbench.stats import median_sorted

SELECTOR_KEYS = ("device", "library", "model", "jobs", "after", "before")
RESAMPLES = 10_000
SEED = 0
ALPHA = 0.05
# a cell's test touches at most about this many ranks (resamples × samples): huge sample
# counts get fewer resamples (still >= MIN_RESAMPLES), stated in the row
_WORK_CAP = 200_000_000
MIN_RESAMPLES = 999


def describe_test(resamples: int = RESAMPLES, seed: int = SEED) -> str:
    return (
        "two-sided Mann-Whitney U test on the raw samples, p-value by permutation "
        f"(Monte Carlo, {resamples} resamples, seed {seed}; p = (1 + hits) / (1 + resamples); "
        "midranks for ties)"
    )


@dataclass(frozen=True)
class Selector:
    text: str
    device: str | None = None
    library: str | None = None
    model: int | None = None
    jobs: tuple[int, int] | None = None
    after: datetime | None = None
    before: datetime | None = None

    def fixed(self, dim: str) -> bool:
        return getattr(self, dim) is not None


def _when(key: str, value: str) -> datetime:
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"{key}={value!r}: not an ISO date or date-time (e.g. 2026-11-01 or 2026-11-01T12:00)"
        ) from None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def _int(key: str, value: str) -> int:
    # ASCII digits only (int() refuses other Unicode digits) and a 64-bit id: a bigger one
    # cannot be sent to the database
    digits = value.lstrip("0") or "0"
    if not (value.isascii() and value.isdigit()) or len(digits) > 19 or int(digits) > INT64_MAX:
        raise ValueError(f"{key}={value!r}: expected a positive integer id up to {INT64_MAX}")
    return int(digits)


def parse_selector(text: str) -> Selector:
    """``device=3,library=native`` -> :class:`Selector`; ValueError naming the bad part."""
    fields: dict[str, Any] = {}
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise ValueError(
            f"empty selector {text!r}: give key=value pairs ({', '.join(SELECTOR_KEYS)})"
        )
    for part in parts:
        key, eq, value = part.partition("=")
        key, value = key.strip().lower(), value.strip()
        if not eq or not value:
            raise ValueError(f"selector part {part!r} is not key=value")
        if key not in SELECTOR_KEYS:
            raise ValueError(
                f"unknown selector key {key!r}; choose from {', '.join(SELECTOR_KEYS)}"
            )
        if key in fields:
            raise ValueError(f"selector {text!r} names {key} twice")
        if key == "device":
            fields[key] = value
        elif key == "library":
            try:
                fields[key] = Library(value.lower()).value
            except ValueError:
                names = ", ".join(lib.value for lib in Library)
                raise ValueError(f"library={value!r}: choose from {names}") from None
        elif key == "model":
            fields[key] = _int(key, value)
        elif key == "jobs":
            lo, dash, hi = value.partition("-")
            first = _int(key, lo.strip())
            last = _int(key, hi.strip()) if dash else first
            if last < first:
                raise ValueError(f"jobs={value!r}: the range ends before it starts")
            fields[key] = (first, last)
        else:
            fields[key] = _when(key, value)
    sel = Selector(text=text, **fields)
    if sel.after is not None and sel.before is not None and sel.before <= sel.after:
        raise ValueError(f"selector {text!r}: before= is not after after=")
    return sel


def match_dims(a: Selector, b: Selector) -> list[str]:
    """What cells are matched on: arch, algorithm, threads, and device / library unless both
    selectors name one."""
    dims = [d for d in ("device", "library") if not (a.fixed(d) and b.fixed(d))]
    return [*dims, "arch", "algorithm", "threads"]


def midranks(values: Sequence[float]) -> Any:
    """1-based ranks, tied values sharing their average rank (ranks never overflow, however
    large the samples)."""
    import numpy as np

    x = np.asarray(values, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    sx = x[order]
    first = np.r_[True, sx[1:] != sx[:-1]]  # where each run of equal values starts
    group = np.cumsum(first) - 1
    starts = np.flatnonzero(first)
    counts = np.diff(np.r_[starts, len(x)])
    ranks = np.empty(len(x))
    ranks[order] = (starts + (counts + 1) / 2)[group]
    return ranks


def permutation_p(
    a: Sequence[float], b: Sequence[float], *, resamples: int = RESAMPLES, seed: int = SEED
) -> tuple[float, int]:
    """Two-sided Mann–Whitney U test with its p-value by permutation: how often a random
    split of the pooled samples puts U at least as far from its null mean n_a·n_b/2 as the
    observed split (midranks for ties, so no continuity or tie correction is needed).
    Returns the p-value and the resamples used (0: U at its null mean, p = 1)."""
    import numpy as np

    if not a or not b:
        raise ValueError("both sides need samples")
    ranks = midranks([*a, *b])
    n, n_a = len(ranks), len(a)
    # U_a = R_a − n_a(n_a+1)/2: the distance of the rank sum R_a from its mean is U's
    centre = n_a * (n + 1) / 2
    obs = abs(float(ranks[:n_a].sum()) - centre)
    if obs == 0.0:
        return 1.0, 0
    resamples = min(resamples, max(MIN_RESAMPLES, _WORK_CAP // n))
    rng = np.random.default_rng(seed)
    block = max(1, min(resamples, 4_000_000 // n))  # rows per batch: bounded memory
    hits = done = 0
    while done < resamples:
        k = min(block, resamples - done)
        perm = rng.permuted(np.tile(ranks, (k, 1)), axis=1)
        dev = np.abs(perm[:, :n_a].sum(axis=1) - centre)
        # rank sums are multiples of 1/2: a tolerance far below that only absorbs rounding
        hits += int(np.count_nonzero(dev >= obs - 1e-6))
        done += k
    return (1 + hits) / (1 + resamples), resamples


def holm(ps: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values, in the input order."""
    m = len(ps)
    order = sorted(range(m), key=lambda i: ps[i])
    out = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * ps[i]))
        out[i] = running
    return out


def _finite(v: float) -> float | None:
    return v if math.isfinite(v) else None


def compare(
    a: Selector,
    b: Selector,
    cells_a: Sequence[dict[str, Any]],
    cells_b: Sequence[dict[str, Any]],
    *,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    alpha: float = ALPHA,
) -> dict[str, Any]:
    """Match the two sides' cells (dicts with device, device_id, library, arch, algorithm,
    threads, samples_ms, result_id; later ones win a key) and test each pair."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    dims = match_dims(a, b)

    def key(c: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(c["device_id"] if d == "device" else c[d] for d in dims)

    side_a = {key(c): c for c in cells_a}
    side_b = {key(c): c for c in cells_b}
    rows = []
    for k in sorted(set(side_a) & set(side_b), key=lambda t: tuple(map(str, t))):
        ca, cb = side_a[k], side_b[k]
        sa, sb = sorted(ca["samples_ms"]), sorted(cb["samples_ms"])
        ma, mb = median_sorted(sa), median_sorted(sb)
        p, used = permutation_p(sa, sb, resamples=resamples, seed=seed)
        rows.append(
            {
                **{d: (ca["device"] if d == "device" else ca[d]) for d in dims},
                "device_a": ca["device"],
                "device_b": cb["device"],
                "library_a": ca["library"],
                "library_b": cb["library"],
                "median_a_ms": ma,
                "median_b_ms": mb,
                "ratio": _finite(mb / ma) if ma > 0 else None,
                "n_a": len(sa),
                "n_b": len(sb),
                "p_value": p,
                "resamples": used,
                "result_a": ca["result_id"],
                "result_b": cb["result_id"],
            }
        )
    for r, adj in zip(rows, holm([r["p_value"] for r in rows]), strict=True):
        r["p_holm"] = adj
        r["significant"] = adj < alpha
    return {
        "a": a.text,
        "b": b.text,
        "match_on": dims,
        "test": describe_test(resamples, seed),
        "alpha": alpha,
        "significance": f"Holm-adjusted p < {alpha} over the {len(rows)} matched cells",
        "rows": rows,
        "only_a": sorted(_describe(side_a[k], dims) for k in set(side_a) - set(side_b)),
        "only_b": sorted(_describe(side_b[k], dims) for k in set(side_b) - set(side_a)),
    }


def _describe(c: dict[str, Any], dims: list[str]) -> str:
    return " ".join(f"{d}={c[d]}" for d in dims)

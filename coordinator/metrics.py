"""Hardware-track metrics (BiBench §3.2 ⑥, Tables 17–20), as pure functions.

- Latency table: one row per (device, threads, arch); per library the columns FP32 / BNN /
  ReAct (whichever algorithms were measured), each the median latency in ms.
- Speedup of a binarized algorithm on a library: t_fp32 / t_bin for every (device, threads,
  arch) cell where both were measured on that library; reported as the plain mean over those
  cells, and the cells are listed.
- Compression: size_fp32 / size_bin of the artifacts per (library, arch), mean over archs.
- OM = sqrt((mean speedup² + mean compression²) / 2).

Inputs are plain records so the same code runs on the database and on the paper's table
(``tests/data/bibench/bibench_hardware_latency_ms.csv``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from statistics import fmean
from typing import Any

BASELINE = "fp32"
ALGORITHM_ORDER = ("fp32", "bnn", "react")
ALGORITHM_LABELS = {"fp32": "FP32", "bnn": "BNN", "react": "ReAct"}


@dataclass(frozen=True)
class Measurement:
    device: str
    threads: int
    arch: str
    library: str
    algorithm: str
    latency_ms: float
    provenance: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class ArtifactSize:
    library: str
    arch: str
    algorithm: str
    size_bytes: int


def algorithm_label(algorithm: str) -> str:
    return ALGORITHM_LABELS.get(algorithm, algorithm)


def _algo_key(a: str) -> tuple[int, str]:
    return (ALGORITHM_ORDER.index(a), a) if a in ALGORITHM_ORDER else (len(ALGORITHM_ORDER), a)


def _cells(ms: Iterable[Measurement]) -> dict[tuple[str, int, str, str, str], Measurement]:
    # one value per cell; later records win (callers pass them oldest first)
    out: dict[tuple[str, int, str, str, str], Measurement] = {}
    for m in ms:
        out[(m.device, m.threads, m.arch, m.library, m.algorithm)] = m
    return out


def columns(ms: Iterable[Measurement]) -> list[dict[str, Any]]:
    """Library groups in first-seen order, algorithms in FP32/BNN/ReAct order."""
    libs: dict[str, set[str]] = {}
    for m in ms:
        libs.setdefault(m.library, set()).add(m.algorithm)
    return [
        {"library": lib, "algorithms": sorted(algos, key=_algo_key)} for lib, algos in libs.items()
    ]


def latency_table(ms: Iterable[Measurement]) -> dict[str, Any]:
    """Tables 17–20 layout: ``{"columns": [...], "rows": [{device, threads, arch,
    latency_ms: {library: {algorithm: ms}}}]}``; rows sorted by device, threads, arch."""
    cells = _cells(ms)
    rows: dict[tuple[str, int, str], dict[str, dict[str, float]]] = {}
    for (dev, thr, arch, lib, algo), m in cells.items():
        rows.setdefault((dev, thr, arch), {}).setdefault(lib, {})[algo] = m.latency_ms
    return {
        "columns": columns(cells.values()),
        "rows": [
            {"device": d, "threads": t, "arch": a, "latency_ms": rows[(d, t, a)]}
            for d, t, a in sorted(rows)
        ],
    }


def speedup_cells(
    ms: Iterable[Measurement], library: str, algorithm: str, baseline: str = BASELINE
) -> list[dict[str, Any]]:
    """t_baseline / t_algorithm per (device, threads, arch) measured for both on ``library``."""
    cells = _cells(ms)
    out = []
    for (dev, thr, arch, lib, algo), m in sorted(cells.items()):
        if lib != library or algo != algorithm:
            continue
        base = cells.get((dev, thr, arch, lib, baseline))
        if base is None or m.latency_ms <= 0:
            continue
        out.append(
            {
                "device": dev,
                "threads": thr,
                "arch": arch,
                "baseline_ms": base.latency_ms,
                "latency_ms": m.latency_ms,
                "speedup": base.latency_ms / m.latency_ms,
            }
        )
    return out


def compression_cells(
    sizes: Iterable[ArtifactSize], library: str, algorithm: str, baseline: str = BASELINE
) -> list[dict[str, Any]]:
    """size_baseline / size_algorithm per arch on ``library`` (later records win)."""
    by_key = {(z.library, z.arch, z.algorithm): z.size_bytes for z in sizes}
    out = []
    for (lib, arch, algo), size in sorted(by_key.items()):
        if lib != library or algo != algorithm:
            continue
        base = by_key.get((lib, arch, baseline))
        if base is None or size <= 0:
            continue
        out.append(
            {
                "arch": arch,
                "baseline_bytes": base,
                "size_bytes": size,
                "compression": base / size,
            }
        )
    return out


def overall_metric(speedup: float | None, compression: float | None) -> float | None:
    """OM = sqrt((speedup² + compression²) / 2); None unless both are known."""
    if speedup is None or compression is None:
        return None
    return math.sqrt((speedup**2 + compression**2) / 2)


def om_rows(ms: Iterable[Measurement], sizes: Iterable[ArtifactSize] = ()) -> list[dict[str, Any]]:
    """One row per (library, binarized algorithm) that was measured or whose compression is
    known (artifact sizes of both it and fp32 on that library)."""
    ms, sizes = list(ms), list(sizes)
    pairs = {(m.library, m.algorithm) for m in ms}
    pairs |= {
        (z.library, z.algorithm) for z in sizes if compression_cells(sizes, z.library, z.algorithm)
    }
    libs_order = [c["library"] for c in columns(ms)]
    libs_order += sorted({lib for lib, _ in pairs} - set(libs_order))
    rows = []
    for lib, algo in sorted(
        (p for p in pairs if p[1] != BASELINE),
        key=lambda p: (libs_order.index(p[0]), _algo_key(p[1])),
    ):
        sp = speedup_cells(ms, lib, algo)
        cp = compression_cells(sizes, lib, algo)
        mean_sp = fmean(c["speedup"] for c in sp) if sp else None
        mean_cp = fmean(c["compression"] for c in cp) if cp else None
        rows.append(
            {
                "library": lib,
                "algorithm": algo,
                "speedup": mean_sp,
                "speedup_cells": len(sp),
                "compression": mean_cp,
                "compression_archs": [c["arch"] for c in cp],
                "om": overall_metric(mean_sp, mean_cp),
                "averaging": (
                    f"speedup: plain mean over {len(sp)} (device, threads, arch) cells measured "
                    f"for both {BASELINE} and {algo} on {lib}; compression: plain mean over "
                    f"{len(cp)} archs"
                ),
                "cells": sp,
                "compression_cells": cp,
            }
        )
    return rows


def long_rows(ms: Iterable[Measurement]) -> list[dict[str, Any]]:
    """The reference CSV's layout (device, threads, arch, library, algorithm, latency_ms),
    followed by each record's provenance fields."""
    cells = _cells(ms)
    order = {c["library"]: i for i, c in enumerate(columns(cells.values()))}
    out = []

    def key(kv: tuple[tuple[str, int, str, str, str], Measurement]) -> tuple[Any, ...]:
        dev, thr, arch, lib, algo = kv[0]
        return (dev, thr, arch, order[lib], _algo_key(algo))

    for (dev, thr, arch, lib, algo), m in sorted(cells.items(), key=key):
        out.append(
            {
                "device": dev,
                "threads": thr,
                "arch": arch,
                "library": lib,
                "algorithm": algo,
                "latency_ms": m.latency_ms,
                **m.provenance,
            }
        )
    return out

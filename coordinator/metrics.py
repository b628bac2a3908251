"""Hardware-track metrics (BiBench §3.2 ⑥, Tables 17–20), as pure functions.

- Latency table: one row per (device, threads, arch); per library the columns FP32 / BNN /
  ReAct (whichever algorithms were measured), each the median latency in ms.
- Speedup of a binarized variant on a library: t_fp32 / t_bin for every (device, threads,
  arch) cell where both were measured on that library, on the same device: cells pair on the
  device's identity (``Measurement.device_id``), never on its name, so two boards that share
  a name or hostname never mix. Reported two ways, each the plain (arithmetic) mean:
  *per variant* over the cells common to FP32 and that variant, and over the *common set*,
  the cells where FP32 and every binarized variant of the library were all measured, so BNN
  and ReAct are compared on the same cells. Cells left out of either are listed with why.
- Compression: size_fp32 / size_bin of the artifacts per (library, arch), mean over archs.
- OM = sqrt((mean speedup² + mean compression²) / 2).

Inputs are plain records so the same code runs on the database and on the paper's tables
(``coordinator/reference/``); docs/metrics.md has the definitions and the paper's numbers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from statistics import fmean
from typing import Any

BASELINE = "fp32"
ALGORITHM_ORDER = ("fp32", "bnn", "react")
ALGORITHM_LABELS = {"fp32": "FP32", "bnn": "BNN", "react": "ReAct"}
# the paper's names for the libraries (Larq Compute Engine is the `lce` library here)
LIBRARY_LABELS = {"lce": "Larq", "dabnn": "daBNN", "native": "bnnbench", "tflite": "TFLite"}
SOURCE_ORDER = ("paper", "measured")

AVERAGING = (
    "speedup = t_fp32 / t_bin per (device, library, arch, threads) cell, paired on one device "
    "(its id, not its name); per variant: plain mean over the cells where FP32 and that "
    "variant were both measured; common set: plain mean over the cells where FP32 and every "
    "binarized variant of the library were measured; compression = size_fp32 / size_bin per "
    "(library, arch), plain mean over archs; OM = sqrt((speedup^2 + compression^2) / 2)"
)

CellKey = tuple[str, int, str, str, str]  # (device key, threads, arch, library, algorithm)
RowKey = tuple[str, int, str]  # (device key, threads, arch)


@dataclass(frozen=True)
class Measurement:
    device: str  # the row's readable name
    threads: int
    arch: str
    library: str
    algorithm: str
    latency_ms: float
    provenance: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    # the device's identity: cells pair on it; None = the name is the identity
    device_id: int | str | None = None
    source: str = "measured"  # "measured" (this fleet) or "paper" (the reference fleet)
    group: str = ""  # sort the rows under this name (the paper's board a device matches)

    @property
    def device_key(self) -> str:
        return f"name:{self.device}" if self.device_id is None else f"id:{self.device_id}"


@dataclass(frozen=True)
class ArtifactSize:
    library: str
    arch: str
    algorithm: str
    size_bytes: int


def algorithm_label(algorithm: str) -> str:
    return ALGORITHM_LABELS.get(algorithm, algorithm)


def library_label(library: str) -> str:
    return LIBRARY_LABELS.get(library, library)


def _algo_key(a: str) -> tuple[int, str]:
    return (ALGORITHM_ORDER.index(a), a) if a in ALGORITHM_ORDER else (len(ALGORITHM_ORDER), a)


def _cells(ms: Iterable[Measurement]) -> dict[CellKey, Measurement]:
    # one value per cell; later records win (callers pass them oldest first)
    out: dict[CellKey, Measurement] = {}
    for m in ms:
        out[(m.device_key, m.threads, m.arch, m.library, m.algorithm)] = m
    return out


def _row_order(m: Measurement) -> tuple[Any, ...]:
    # a measured board sorts next to the paper's rows of the board it matches (paper first)
    src = SOURCE_ORDER.index(m.source) if m.source in SOURCE_ORDER else len(SOURCE_ORDER)
    return (m.group or m.device, src, m.device, m.device_key, m.threads, m.arch)


def _where(m: Measurement) -> str:
    return f"on {m.device}, {m.threads} thread{'s' if m.threads != 1 else ''}, {m.arch}"


def columns(ms: Iterable[Measurement]) -> list[dict[str, Any]]:
    """Library groups in first-seen order, algorithms in FP32/BNN/ReAct order."""
    libs: dict[str, set[str]] = {}
    for m in ms:
        libs.setdefault(m.library, set()).add(m.algorithm)
    return [
        {"library": lib, "algorithms": sorted(algos, key=_algo_key)} for lib, algos in libs.items()
    ]


def latency_table(ms: Iterable[Measurement]) -> dict[str, Any]:
    """Tables 17–20 layout: ``{"columns": [...], "rows": [{device, device_id, source,
    threads, arch, latency_ms: {library: {algorithm: ms}}}]}``; rows sorted by device,
    threads, arch (a measured board right after the paper's rows of the board it matches)."""
    cells = _cells(ms)
    rows: dict[RowKey, dict[str, dict[str, float]]] = {}
    first: dict[RowKey, Measurement] = {}
    for (dev, thr, arch, lib, algo), m in cells.items():
        rows.setdefault((dev, thr, arch), {}).setdefault(lib, {})[algo] = m.latency_ms
        first.setdefault((dev, thr, arch), m)
    return {
        "columns": columns(cells.values()),
        "rows": [
            {
                "device": m.device,
                "device_id": m.device_id,
                "source": m.source,
                "threads": m.threads,
                "arch": m.arch,
                "latency_ms": rows[k],
            }
            for k, m in sorted(first.items(), key=lambda kv: _row_order(kv[1]))
        ],
    }


def binarized_algorithms(ms: Iterable[Measurement], library: str) -> list[str]:
    """The variants other than FP32 measured on ``library``, in FP32/BNN/ReAct order."""
    return sorted({m.algorithm for m in ms if m.library == library} - {BASELINE}, key=_algo_key)


def speedup_cells(
    ms: Iterable[Measurement],
    library: str,
    algorithm: str,
    baseline: str = BASELINE,
    require: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """t_baseline / t_algorithm per (device, threads, arch) measured for both on ``library``
    (and, with ``require``, for those algorithms too: the common set)."""
    cells = _cells(ms)
    out = []
    for (dev, thr, arch, lib, algo), m in sorted(cells.items(), key=lambda kv: _row_order(kv[1])):
        if lib != library or algo != algorithm:
            continue
        base = cells.get((dev, thr, arch, lib, baseline))
        if base is None or m.latency_ms <= 0:
            continue
        if any((dev, thr, arch, lib, r) not in cells for r in require):
            continue
        out.append(
            {
                "device": m.device,
                "device_id": m.device_id,
                "threads": thr,
                "arch": arch,
                "baseline_ms": base.latency_ms,
                "latency_ms": m.latency_ms,
                "speedup": base.latency_ms / m.latency_ms,
            }
        )
    return out


def excluded_cells(
    ms: Iterable[Measurement], library: str, algorithms: Sequence[str], baseline: str = BASELINE
) -> list[dict[str, Any]]:
    """Cells of ``library`` where some but not all of ``baseline`` + ``algorithms`` were
    measured (so a speedup over them leaves the cell out), each with the reason, e.g.
    "bnn measured, fp32 missing on Raspberry Pi 4B, 4 threads, ResNet18"."""
    wanted = [baseline, *(a for a in algorithms if a != baseline)]
    cells = _cells(ms)
    by_row: dict[RowKey, dict[str, Measurement]] = {}
    for (dev, thr, arch, lib, algo), m in cells.items():
        if lib == library and algo in wanted:
            by_row.setdefault((dev, thr, arch), {})[algo] = m
    out = []
    for have in sorted(by_row.values(), key=lambda h: _row_order(next(iter(h.values())))):
        measured = [a for a in wanted if a in have]
        missing = [a for a in wanted if a not in have]
        bad = [a for a in measured if have[a].latency_ms <= 0]
        if not missing and not bad:
            continue
        m = next(iter(have.values()))
        reason = f"{', '.join(measured)} measured"
        if missing:
            reason += f", {', '.join(missing)} missing"
        if bad:
            reason += f", {', '.join(bad)} without a positive latency"
        out.append(
            {
                "device": m.device,
                "device_id": m.device_id,
                "threads": m.threads,
                "arch": m.arch,
                "library": library,
                "measured": measured,
                "missing": missing,
                "reason": f"{reason} {_where(m)}",
            }
        )
    return out


def compression_cells(
    sizes: Iterable[ArtifactSize],
    library: str,
    algorithm: str,
    baseline: str = BASELINE,
    require: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """size_baseline / size_algorithm per arch on ``library`` (later records win); with
    ``require``, only archs where those algorithms' sizes are known too."""
    by_key = {(z.library, z.arch, z.algorithm): z.size_bytes for z in sizes}
    out = []
    for (lib, arch, algo), size in sorted(by_key.items()):
        if lib != library or algo != algorithm:
            continue
        base = by_key.get((lib, arch, baseline))
        if base is None or size <= 0:
            continue
        if any((lib, arch, r) not in by_key for r in require):
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
    return math.hypot(speedup, compression) / math.sqrt(2)  # no overflow where squares would


def _mean(cells: list[dict[str, Any]], key: str) -> float | None:
    return fmean(c[key] for c in cells) if cells else None


def om_rows(ms: Iterable[Measurement], sizes: Iterable[ArtifactSize] = ()) -> list[dict[str, Any]]:
    """One row per (library, binarized algorithm) that was measured or whose compression is
    known (artifact sizes of both it and fp32 on that library): speedup, compression and OM
    per variant and over the library's common set, the cells averaged and those left out."""
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
        mean_sp, mean_cp = _mean(sp, "speedup"), _mean(cp, "compression")
        excluded = excluded_cells(ms, lib, [algo])
        # the common set: FP32 and every binarized variant measured on this library
        common = sorted({*binarized_algorithms(ms, lib), algo}, key=_algo_key)
        others = [a for a in common if a != algo]
        sp_c = speedup_cells(ms, lib, algo, require=others)
        cp_c = compression_cells(sizes, lib, algo, require=others)
        mean_sp_c, mean_cp_c = _mean(sp_c, "speedup"), _mean(cp_c, "compression")
        excluded_c = excluded_cells(ms, lib, common)
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
                    f"speedup: plain mean over {_n(len(sp), 'cell')} (device, threads, arch) "
                    f"measured for both {BASELINE} and {algo} on {lib} ({len(excluded)} left "
                    f"out); compression: plain mean over {_n(len(cp), 'arch')}"
                ),
                "cells": sp,
                "compression_cells": cp,
                "excluded": excluded,
                "common_algorithms": [BASELINE, *common],
                "common_speedup": mean_sp_c,
                "common_speedup_cells": len(sp_c),
                "common_compression": mean_cp_c,
                "common_compression_archs": [c["arch"] for c in cp_c],
                "common_om": overall_metric(mean_sp_c, mean_cp_c),
                "common_averaging": (
                    f"common set: plain mean over {_n(len(sp_c), 'cell')} where "
                    f"{_and([BASELINE, *common])} were {'all' if others else 'both'} measured "
                    f"on {lib} "
                    f"({len(excluded_c)} left out); compression over {_n(len(cp_c), 'arch')}"
                ),
                "common_excluded": excluded_c,
            }
        )
    return rows


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _and(words: Sequence[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def long_rows(ms: Iterable[Measurement]) -> list[dict[str, Any]]:
    """The reference CSV's layout (device, threads, arch, library, algorithm, latency_ms),
    then the source (measured / paper) and each record's provenance fields."""
    cells = _cells(ms)
    order = {c["library"]: i for i, c in enumerate(columns(cells.values()))}

    def key(m: Measurement) -> tuple[Any, ...]:
        return (*_row_order(m), order[m.library], _algo_key(m.algorithm))

    return [
        {
            "device": m.device,
            "threads": m.threads,
            "arch": m.arch,
            "library": m.library,
            "algorithm": m.algorithm,
            "latency_ms": m.latency_ms,
            "source": m.source,
            **m.provenance,
        }
        for m in sorted(cells.values(), key=key)
    ]

"""The BiBench paper's hardware track as a read-only reference fleet.

``bibench_hardware_latency_ms.csv`` holds every cell of the paper's Tables 17–20 (14 chips,
Larq Compute Engine at 1/2/4/8 threads and 16 on Apple, daBNN at 1 thread; ResNet18/34 and
VGG-Small), ``bibench_table3_efficiency.csv`` its Table 3. They ship with the package: the
tests read these copies, and ``bnnbench results --reference`` shows the paper's rows, labelled
"(paper)", next to the user's own and recomputes the paper's speedups and OM from the cells.

The paper's library "larq" is this project's ``lce`` (the same engine), so a user's LCE rows
and the paper's share the Larq columns. docs/metrics.md records how close each way of
averaging the cells comes to Table 3 (the paper does not state its own).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterable
from functools import cache
from importlib import resources
from statistics import fmean, geometric_mean, median
from typing import Any

from coordinator import metrics
from coordinator.metrics import Measurement

HARDWARE_CSV = "bibench_hardware_latency_ms.csv"
TABLE3_CSV = "bibench_table3_efficiency.csv"
CITATION = (
    "BiBench: Benchmarking and Analyzing Network Binarization (Qin et al., ICML 2023), "
    "Tables 17-20 and Table 3"
)
SOURCE = "paper"
LABEL_SUFFIX = " (paper)"
LIBRARIES = {"larq": "lce", "dabnn": "dabnn"}  # the paper's library -> Library value here
# Table 3's algorithms deploy as one of two binarized graphs (same operator at inference)
DEPLOYED_AS = {"react": "react"}


def read_text(name: str) -> str:
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")


@cache
def hardware_rows() -> tuple[dict[str, str], ...]:
    """The CSV rows as written (device, threads, arch, library, algorithm, latency_ms)."""
    return tuple(csv.DictReader(io.StringIO(read_text(HARDWARE_CSV))))


@cache
def table3_rows() -> tuple[dict[str, str], ...]:
    return tuple(csv.DictReader(io.StringIO(read_text(TABLE3_CSV))))


def measurements() -> list[Measurement]:
    """The paper's cells as records of the reference fleet: row name "<device> (paper)",
    identity "paper:<device>" (never pairs with a measured board), library as named here."""
    return [
        Measurement(
            device=r["device"] + LABEL_SUFFIX,
            threads=int(r["threads"]),
            arch=r["arch"],
            library=LIBRARIES[r["library"]],
            algorithm=r["algorithm"],
            latency_ms=float(r["latency_ms"]),
            provenance={"paper_device": r["device"], "paper_library": r["library"]},
            device_id=f"paper:{r['device']}",
            source=SOURCE,
            group=r["device"],
        )
        for r in hardware_rows()
    ]


# a measured board's name, SoC or board string (lower case, only [a-z0-9+] kept) -> the
# paper's device whose rows it sorts next to; specific patterns first
_MATCHERS: tuple[tuple[str, str], ...] = (
    (r"applem1max", "Apple M1 Max"),
    (r"applem1(?!pro|ultra|max)", "Apple M1"),
    (r"raspberrypi4|bcm2711", "Raspberrypi 4B"),
    (r"raspberrypi3(modelbplus|bplus|b\+)|bcm2837b0", "Raspberrypi 3B+"),
    (r"kirin9000e", "Kirin 9000E"),
    (r"kirin970", "Kirin 970"),
    (r"kirin980", "Kirin 980"),
    (r"kirin985", "Kirin 985"),
    (r"kirin990(?!0)", "Kirin 990"),
    (r"dimensity820", "Dimensity 820"),
    (r"dimensity9000(?![0-9+])", "Dimensity 9000"),
    (r"snapdragon855\+", "Snapdragon 855+"),
    (r"snapdragon870", "Snapdragon 870"),
    (r"snapdragon888(?!\+)", "Snapdragon 888"),
)


def paper_device_for(*names: str | None) -> str | None:
    """The paper's device a measured board is (by its name, SoC or board string), if any:
    only where rows are placed, never what is averaged."""
    for raw in names:
        if not raw:
            continue
        flat = re.sub(r"[^a-z0-9+]", "", raw.lower())
        for pattern, device in _MATCHERS:
            if re.search(pattern, flat):
                return device
    return None


def _f(v: str) -> float | None:
    return float(v) if v else None


def table3() -> list[dict[str, Any]]:
    """Table 3's hardware track per algorithm (deployable ones), its OM recomputed from its
    own speedup and compression, and the speedup recomputed from Tables 17–20 (plain mean of
    the Larq cells of the graph the algorithm deploys as) with the OM that gives."""
    cells = {a: metrics.speedup_cells(measurements(), "lce", a) for a in ("bnn", "react")}
    out = []
    for r in table3_rows():
        speedup, compression = _f(r["hardware_speedup"]), _f(r["hardware_compression"])
        if speedup is None:
            continue  # the paper reports it as not deployable
        graph = DEPLOYED_AS.get(r["algorithm"], "bnn")
        from_cells = fmean(c["speedup"] for c in cells[graph])
        out.append(
            {
                "algorithm": r["algorithm"],
                "deployed_as": graph,
                "speedup": speedup,
                "compression": compression,
                "om": _f(r["hardware_om"]),
                "om_recomputed": metrics.overall_metric(speedup, compression),
                "speedup_from_cells": from_cells,
                "cells": len(cells[graph]),
                "om_from_cells": metrics.overall_metric(from_cells, compression),
            }
        )
    return out


Key = tuple[str, int, str]  # (device, threads, arch)


def _latencies(ms: Iterable[Measurement]) -> dict[tuple[str, int, str, str, str], float]:
    return {(m.device, m.threads, m.arch, m.library, m.algorithm): m.latency_ms for m in ms}


def _group_mean(sp: dict[Key, float], group: Callable[[Key], Any]) -> float:
    groups: dict[Any, list[float]] = {}
    for k, v in sp.items():
        groups.setdefault(group(k), []).append(v)
    return fmean(fmean(v) for v in groups.values())


def averaging_study(ms: Iterable[Measurement] | None = None) -> list[dict[str, Any]]:
    """Ways of averaging the paper's Larq cells into one BNN and one ReAct speedup, to set
    against Table 3's 5.45 and 4.89 (docs/metrics.md); only the first is this tool's."""
    lat = _latencies(measurements() if ms is None else ms)
    keys = sorted({k[:3] for k in lat if k[3] == "lce"})
    apple = {d for d, _, _ in keys if d.startswith("Apple")}

    def sp(algo: str, keep: Callable[[Key], bool] = lambda k: True) -> dict[Key, float]:
        return {k: lat[(*k, "lce", "fp32")] / lat[(*k, "lce", algo)] for k in keys if keep(k)}

    def best_fp32(k: Key) -> float:  # the faster FP32 library on that board (not like-for-like)
        return min(lat[(*k, lib, "fp32")] for lib in ("lce", "dabnn") if (*k, lib, "fp32") in lat)

    def pooled_with_dabnn(algo: str) -> float:
        extra = [
            lat[(*k[:3], "dabnn", "fp32")] / v
            for k, v in lat.items()
            if algo == "bnn" and k[3:] == ("dabnn", "bnn")
        ]
        return fmean([*sp(algo).values(), *extra])

    def ratio_of_totals(algo: str) -> float:
        return sum(lat[(*k, "lce", "fp32")] for k in keys) / sum(
            lat[(*k, "lce", algo)] for k in keys
        )

    ways: list[tuple[str, str, Callable[[str], float]]] = [
        (
            "cell-mean",
            "plain mean over all (device, threads, arch) cells: this tool's speedup",
            lambda a: fmean(sp(a).values()),
        ),
        (
            "device-mean",
            "mean over devices of each device's mean",
            lambda a: _group_mean(sp(a), lambda k: k[0]),
        ),
        (
            "arch-mean",
            "mean over archs of each arch's mean",
            lambda a: _group_mean(sp(a), lambda k: k[2]),
        ),
        (
            "thread-mean",
            "mean over thread counts of each count's mean",
            lambda a: _group_mean(sp(a), lambda k: k[1]),
        ),
        (
            "geometric-mean",
            "geometric mean over all cells",
            lambda a: geometric_mean(sp(a).values()),
        ),
        ("median", "median over all cells", lambda a: median(sp(a).values())),
        ("ratio-of-totals", "sum of FP32 latencies / sum of binary ones", ratio_of_totals),
        (
            "no-16-threads",
            "plain mean without the 16-thread (Apple only) cells",
            lambda a: fmean(sp(a, lambda k: k[1] != 16).values()),
        ),
        (
            "no-apple",
            "plain mean without Apple M1 / M1 Max",
            lambda a: fmean(sp(a, lambda k: k[0] not in apple).values()),
        ),
        (
            "1-thread",
            "plain mean over the 1-thread cells only",
            lambda a: fmean(sp(a, lambda k: k[1] == 1).values()),
        ),
        (
            "with-dabnn",
            "plain mean with daBNN's BNN cells pooled in (ReAct: Larq only)",
            pooled_with_dabnn,
        ),
        (
            "best-fp32-baseline",
            "plain mean of t_fp32 / t_bin where t_fp32 is the faster of Larq's and daBNN's FP32 "
            "on that board (mixes libraries)",
            lambda a: fmean(best_fp32(k) / lat[(*k, "lce", a)] for k in keys),
        ),
    ]
    return [
        {"name": name, "description": text, "bnn": f("bnn"), "react": f("react")}
        for name, text, f in ways
    ]


def summary(ms: list[Measurement] | None = None) -> dict[str, Any]:
    """What the reference block of a table carries: the citation, the paper's OM rows as
    this tool computes them from its cells, and Table 3 set against them."""
    ms = measurements() if ms is None else ms
    return {
        "source": CITATION,
        "label": LABEL_SUFFIX.strip(),
        "om": metrics.om_rows(ms),
        "table3": table3(),
        "note": (
            "Table 3's speedups (BNN 5.45, ReAct 4.89) are not exactly reproducible from "
            "Tables 17-20: the paper does not state its averaging, and the plain mean over "
            "the Larq cells gives the figures above (docs/metrics.md). The paper publishes no "
            "artifact sizes, so its compression is Table 3's."
        ),
    }


def table() -> dict[str, Any]:
    """The reference fleet alone, shaped like ``coordinator.results.table``: the paper's
    rows and cells; ``om`` is empty (no measurements of one's own), ``reference`` holds the
    paper's."""
    ms = measurements()
    return {
        **metrics.latency_table(ms),
        "unit": "ms (median)",
        "averaging": metrics.AVERAGING,
        "om": [],
        "cells": metrics.long_rows(ms),
        "reference": summary(ms),
    }

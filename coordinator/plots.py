"""Charts of the hardware track (PNG or SVG), drawn from the data the tables use.

Input is :class:`PlotData`: the hardware-track table (``results.table`` / ``GET
/results/table``: its ``cells`` and ``om`` rows), the models (``ModelOut``: arch, algorithm,
analysis) and the artifacts (``ArtifactOut``: library, size). The coordinator builds it from
its database (:func:`data_from_session`), ``bnnbench plot`` from the REST API: the same data
gives the same chart, byte for byte.

Kinds (:data:`KINDS`):

- ``latency``: median latency vs threads, one panel per device, one line per library, arch
  and algorithm.
- ``speedup``: t_fp32 / t_bin per (arch, threads) cell, one panel per device, a bar per
  library and algorithm: the cells the OM rows average.
- ``storage``: artifact size on disk per arch, a bar per library (format) and algorithm.
- ``theoretical``: per binarized (arch, algorithm) the theoretical speedup of the model's
  analysis (FLOPs / (BOPs/64 + FLOPs_fp), converters/analyze.py) beside the measured mean
  speedup per library (cells of that arch).

matplotlib is imported inside :func:`render` only (Agg canvas, no pyplot): importing this
module costs nothing, and renders are serialised (matplotlib's rc settings are global).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from statistics import fmean
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from sqlalchemy.orm import Session

KINDS: dict[str, str] = {
    "latency": "Median latency vs threads, per device and library",
    "speedup": "Measured speedup (FP32 / binarized) per device",
    "storage": "Artifact size per format (library), arch and algorithm",
    "theoretical": "Theoretical vs measured speedup per binarized model",
}
FORMATS: dict[str, str] = {"png": "image/png", "svg": "image/svg+xml"}

ALGORITHM_LABELS = {"fp32": "FP32", "bnn": "BNN", "react": "ReAct"}
BASELINE = "fp32"


class PlotError(ValueError):
    """An unknown kind or format (the caller's mistake, named in the message)."""


@dataclass(frozen=True)
class PlotData:
    table: dict[str, Any]  # results.table(): columns, rows, om, cells
    models: list[dict[str, Any]] = field(default_factory=list)  # ModelOut as JSON
    artifacts: list[dict[str, Any]] = field(default_factory=list)  # ArtifactOut as JSON

    def digest(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()


def data_from_session(s: Session) -> PlotData:
    """The coordinator's side: what GET /results/table, /models and /artifacts answer."""
    from sqlalchemy import select

    from coordinator import results
    from coordinator.models import Artifact, Model
    from coordinator.views import artifact_out, model_out

    return PlotData(
        table=results.table(s),
        models=[
            model_out(m).model_dump(mode="json")
            for m in s.scalars(select(Model).order_by(Model.id))
        ],
        artifacts=[
            artifact_out(a).model_dump(mode="json")
            for a in s.scalars(select(Artifact).order_by(Artifact.id))
        ],
    )


# ------------------------------------------------------------------ series (plain data)


def algo_label(algorithm: str) -> str:
    return ALGORITHM_LABELS.get(algorithm, algorithm)


def _arch(m: dict[str, Any]) -> str:
    # as coordinator.results.arch_label / algorithm_label name the table's rows
    return str(m.get("arch") or m["name"])


def _algorithm(m: dict[str, Any]) -> str:
    return str(m.get("algorithm") or "unknown").lower()


def latency_series(data: PlotData) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """device -> "library arch ALGO" -> [(threads, median ms)] in thread order."""
    out: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for c in data.table.get("cells", []):
        label = f"{c['library']} {c['arch']} {algo_label(c['algorithm'])}"
        out.setdefault(c["device"], {}).setdefault(label, []).append(
            (int(c["threads"]), float(c["latency_ms"]))
        )
    for lines in out.values():
        for pts in lines.values():
            pts.sort()
    return out


def speedup_series(data: PlotData) -> dict[str, list[dict[str, Any]]]:
    """device -> the OM rows' speedup cells (library, algorithm, arch, threads, speedup)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for o in data.table.get("om", []):
        for c in o.get("cells", []):
            out.setdefault(c["device"], []).append(
                {
                    "library": o["library"],
                    "algorithm": o["algorithm"],
                    "arch": c["arch"],
                    "threads": int(c["threads"]),
                    "speedup": float(c["speedup"]),
                }
            )
    return out


def storage_series(data: PlotData) -> list[dict[str, Any]]:
    """Ready artifacts' sizes: (library, arch, algorithm, size_bytes), later uploads win."""
    models = {m["id"]: m for m in data.models}
    sizes: dict[tuple[str, str, str], int] = {}
    for a in sorted(data.artifacts, key=lambda a: a["id"]):
        m = models.get(a["model_id"])
        if m is None or a.get("status") != "ready" or not a.get("size"):
            continue
        sizes[(a["library"], _arch(m), _algorithm(m))] = int(a["size"])
    return [
        {"library": lib, "arch": arch, "algorithm": algo, "size_bytes": size}
        for (lib, arch, algo), size in sizes.items()
    ]


def theoretical_series(data: PlotData) -> list[dict[str, Any]]:
    """Per binarized (arch, algorithm) with an analysis: its theoretical speedup and the
    measured mean speedup per library over the OM cells of that arch."""
    theory: dict[tuple[str, str], float] = {}
    for m in sorted(data.models, key=lambda m: m["id"]):  # the latest upload wins
        th = ((m.get("analysis") or {}).get("theoretical") or {}).get("speedup")
        if th is not None and _algorithm(m) != BASELINE:
            theory[(_arch(m), _algorithm(m))] = float(th)
    out = []
    for (arch, algo), th in theory.items():
        measured: dict[str, float] = {}
        for o in data.table.get("om", []):
            cells = [c["speedup"] for c in o.get("cells", []) if c["arch"] == arch]
            if o["algorithm"] == algo and cells:
                measured[o["library"]] = fmean(cells)
        out.append({"arch": arch, "algorithm": algo, "theoretical": th, "measured": measured})
    return out


# ------------------------------------------------------------------ drawing

_lock = threading.Lock()
_cache: OrderedDict[tuple[str, str, str], bytes] = OrderedDict()
_CACHE_SIZE = 32  # a dashboard reloading its charts redraws nothing until the data change

# typed Any: matplotlib types rc_context's keys as a Literal of every rc name
_RC: Any = {
    "svg.fonttype": "none",  # text stays text: smaller, searchable, selectable
    "svg.hashsalt": "bnnbench",  # stable element ids: same data, same bytes
    "font.size": 9,
    "axes.grid": True,
    "grid.alpha": 0.3,
}


def render(kind: str, data: PlotData, fmt: str = "png") -> bytes:
    """The chart as PNG or SVG bytes (identical bytes for identical data)."""
    if kind not in KINDS:
        raise PlotError(f"unknown plot kind {kind!r}; one of: {', '.join(KINDS)}")
    if fmt not in FORMATS:
        raise PlotError(f"unknown plot format {fmt!r}; one of: {', '.join(FORMATS)}")
    key = (kind, fmt, data.digest())
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
        out = _draw(kind, data, fmt)
        _cache[key] = out
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
        return out


def _draw(kind: str, data: PlotData, fmt: str) -> bytes:
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(8.0, 4.5), dpi=100, layout="constrained")
        FigureCanvasAgg(fig)
        series, draw = _CHARTS[kind]
        shown = series(data)
        if shown:
            draw(fig, data, shown)
        else:
            fig.text(0.5, 0.5, "no data yet", ha="center", va="center", fontsize=14)
        fig.suptitle(KINDS[kind])
        buf = io.BytesIO()
        metadata: dict[str, Any] = {"Date": None} if fmt == "svg" else {}
        fig.savefig(buf, format=fmt, metadata=metadata)
    return buf.getvalue()


def _panels(fig: Figure, n: int, *, wide: bool = False) -> list[Axes]:
    cols = 1 if n == 1 or wide else 2
    rows = math.ceil(n / cols)
    fig.set_size_inches(8.0, max(3.5, 3.2 * rows))
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return axes[:n]


def _wide_range(values: list[float]) -> bool:
    pos = [v for v in values if v > 0]
    return bool(pos) and max(pos) / min(pos) > 30


def _shared_legend(fig: Figure, axes: list[Axes]) -> None:
    """One legend for all panels (a series keeps its colour across panels)."""
    seen: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(label, handle)
    fig.legend(list(seen.values()), list(seen), loc="outside lower center", ncols=3, fontsize=7)


def _draw_latency(
    fig: Figure, data: PlotData, series: dict[str, dict[str, list[tuple[int, float]]]]
) -> None:
    cells = data.table.get("cells", [])
    # colour: library and algorithm; line style and marker: arch (same in every panel)
    pairs = list(dict.fromkeys((c["library"], algo_label(c["algorithm"])) for c in cells))
    archs = list(dict.fromkeys(str(c["arch"]) for c in cells))
    styles, markers = ("-", "--", ":", "-."), ("o", "s", "^", "D")
    axes = _panels(fig, len(series))
    for ax, (device, lines) in zip(axes, sorted(series.items()), strict=True):
        for c_lib, c_arch, c_algo in dict.fromkeys(
            (c["library"], str(c["arch"]), algo_label(c["algorithm"]))
            for c in cells
            if c["device"] == device
        ):
            pts = lines[f"{c_lib} {c_arch} {c_algo}"]
            i, j = pairs.index((c_lib, c_algo)), archs.index(c_arch)
            ax.plot(
                [t for t, _ in pts],
                [v for _, v in pts],
                color=f"C{i % 10}",
                linestyle=styles[j % len(styles)],
                marker=markers[j % len(markers)],
                label=f"{c_lib} {c_arch} {c_algo}",
            )
        ax.set_xticks(sorted({t for pts in lines.values() for t, _ in pts}))
        if _wide_range([v for pts in lines.values() for _, v in pts]):
            ax.set_yscale("log")
        ax.set(title=device, xlabel="threads", ylabel="median latency (ms)")
    _shared_legend(fig, axes)


def _grouped_bars(
    ax: Axes,
    groups: list[str],
    bars: dict[str, dict[str, float]],
    fmt: str = "{:.2f}",
    colours: dict[str, str] | None = None,
) -> None:
    """Bars of each series (``bars``: series label -> group -> value) side by side per group."""
    width = 0.8 / max(1, len(bars))
    for i, (label, values) in enumerate(bars.items()):
        xs = [g + (i - (len(bars) - 1) / 2) * width for g in range(len(groups))]
        hs = [values.get(g, math.nan) for g in groups]
        colour = (colours or {}).get(label, f"C{i % 10}")
        cont = ax.bar(xs, hs, width, label=label, color=colour)
        if len(groups) * len(bars) <= 40:  # past that the numbers overlap: bars only
            labels = ["" if math.isnan(h) else fmt.format(h) for h in hs]
            ax.bar_label(cont, labels=labels, fontsize=7)
    ax.set_xticks(range(len(groups)), groups)


def _draw_speedup(fig: Figure, data: PlotData, series: dict[str, list[dict[str, Any]]]) -> None:
    labels = list(
        dict.fromkeys(
            f"{c['library']} {algo_label(c['algorithm'])}" for cs in series.values() for c in cs
        )
    )
    colours = {label: f"C{i % 10}" for i, label in enumerate(labels)}
    most = max(len({(c["arch"], c["threads"]) for c in cs}) for cs in series.values())
    axes = _panels(fig, len(series), wide=most > 6)  # many cells: one panel per row
    for ax, (device, cells) in zip(axes, sorted(series.items()), strict=True):
        ordered = sorted(cells, key=lambda c: (c["arch"], c["threads"]))
        groups = list(dict.fromkeys(f"{c['arch']}\n{c['threads']} thr" for c in ordered))
        bars: dict[str, dict[str, float]] = {}
        for c in ordered:
            label = f"{c['library']} {algo_label(c['algorithm'])}"
            bars.setdefault(label, {})[f"{c['arch']}\n{c['threads']} thr"] = c["speedup"]
        _grouped_bars(ax, groups, bars, "{:.1f}", colours)
        ax.axhline(1.0, color="grey", linestyle="--", linewidth=0.8)
        ax.tick_params(axis="x", labelsize=7)
        ax.set(title=device, ylabel="speedup (t_fp32 / t_bin)")
    _shared_legend(fig, axes)


def _draw_storage(fig: Figure, data: PlotData, rows: list[dict[str, Any]]) -> None:
    ax = fig.subplots()
    biggest = max(r["size_bytes"] for r in rows)
    unit, scale = ("MiB", 2**20) if biggest >= 10 * 2**20 else ("KiB", 2**10)
    groups = list(dict.fromkeys(r["arch"] for r in rows))
    bars: dict[str, dict[str, float]] = {}
    for r in sorted(rows, key=lambda r: (r["library"], r["algorithm"] != BASELINE, r["algorithm"])):
        label = f"{r['library']} {algo_label(r['algorithm'])}"
        bars.setdefault(label, {})[r["arch"]] = r["size_bytes"] / scale
    _grouped_bars(ax, groups, bars, "{:.1f}")
    ax.legend(fontsize=7)
    if _wide_range([r["size_bytes"] for r in rows]):
        ax.set_yscale("log")
    ax.set(ylabel=f"artifact size ({unit})", xlabel="arch")


def _draw_theoretical(fig: Figure, data: PlotData, rows: list[dict[str, Any]]) -> None:
    ax = fig.subplots()
    groups = [f"{r['arch']} {algo_label(r['algorithm'])}" for r in rows]
    bars: dict[str, dict[str, float]] = {"theoretical": {}}
    for g, r in zip(groups, rows, strict=True):
        bars["theoretical"][g] = r["theoretical"]
        for lib, v in r["measured"].items():
            bars.setdefault(f"measured: {lib}", {})[g] = v
    _grouped_bars(ax, groups, bars, "{:.2f}")
    ax.legend(fontsize=7)
    ax.axhline(1.0, color="grey", linestyle="--", linewidth=0.8)
    if _wide_range([v for b in bars.values() for v in b.values()]):
        ax.set_yscale("log")
    ax.set(ylabel="speedup over FP32")


# per kind: its series, and how a figure draws them when there are any ("no data yet" else)
_CHARTS: dict[str, tuple[Callable[[PlotData], Any], Callable[[Figure, PlotData, Any], None]]] = {
    "latency": (latency_series, _draw_latency),
    "speedup": (speedup_series, _draw_speedup),
    "storage": (storage_series, _draw_storage),
    "theoretical": (theoretical_series, _draw_theoretical),
}

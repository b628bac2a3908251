"""Parsers for the output of external benchmark tools the runners drive.

* TFLite's ``benchmark_model`` and LCE's ``lce_benchmark_model`` (the same tool with LCE's ops
  registered): statistics lines ``count=… first=… curr=… min=… max=… avg=… std=…`` (newer
  builds add ``p5= median= p95=``, one-run warm-ups print just ``count=1 curr=…``), the summary
  ``Inference timings in us: Init: …, First inference: …, Warmup (avg): …, Inference (avg): …``
  (2018 builds: ``Average inference timings in us: Warmup: …, Init: …, no stats: …``), numbers
  possibly in scientific notation (``2.95034e+06``), lines possibly prefixed by logcat.
* google-benchmark (daBNN's ``benchmark_single_model``): ``--benchmark_format=json`` (times
  per iteration in ``time_unit``, ns by default) and the default console table.

Pure standard library: the agent imports this on boards.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any


class BenchmarkOutputError(ValueError):
    """The tool's output has no usable timings (it failed, or is not that tool's output)."""


_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|[-+]?nan|[-+]?inf"
_KV_RE = re.compile(rf"(\w+)=({_NUM})(?=\s|$)", re.IGNORECASE)
_STAT_RE = re.compile(r"(?:^|[\s:])count=\d+(?:\s|$)")
_SUMMARY_RE = re.compile(r"timings in us:\s*(.*)$")
_PAIR_RE = re.compile(rf"([A-Za-z][A-Za-z ()]*?):\s*({_NUM})", re.IGNORECASE)
_SIZE_RE = re.compile(rf"input model file size \(MB\):\s*({_NUM})")
_SESSION_RE = re.compile(rf"Initialized session in\s*({_NUM})\s*ms")
_MEMORY_RE = re.compile(
    rf"((?:Peak )?memory footprint[^:]*)\(MB\):\s*init=({_NUM})\s+"
    rf"overall=({_NUM})",
    re.IGNORECASE,
)

# summary labels → field (2018 builds called the steady-state average "no stats")
_SUMMARY_FIELDS = {
    "init": "init_us",
    "first inference": "first_inference_us",
    "warmup (avg)": "warmup_avg_us",
    "warmup": "warmup_avg_us",
    "inference (avg)": "inference_avg_us",
    "no stats": "inference_avg_us",
}


def _num(text: str) -> float:
    return float(text)  # float() reads 1.2e+06, nan, -nan, inf


@dataclass
class LatencyStats:
    """One ``count=…`` line of benchmark_model, microseconds."""

    count: int
    values: dict[str, float] = field(default_factory=dict)  # first curr min max avg std p5 …

    def get(self, key: str) -> float | None:
        return self.values.get(key)

    @property
    def avg_us(self) -> float | None:
        # a one-run line has no avg: its only value is the run's time
        return self.values.get("avg", self.values.get("curr") if self.count == 1 else None)


@dataclass
class BenchmarkModelOutput:
    init_us: float | None = None
    first_inference_us: float | None = None
    warmup_avg_us: float | None = None
    inference_avg_us: float | None = None
    warmup: LatencyStats | None = None
    inference: LatencyStats | None = None
    model_size_mb: float | None = None
    session_init_ms: float | None = None
    memory_mb: dict[str, float] = field(default_factory=dict)  # init, overall
    memory_kind: str = ""  # "peak" or "delta" (the tool's wording changed over versions)
    errors: list[str] = field(default_factory=list)

    @property
    def inference_avg_ms(self) -> float:
        if self.inference_avg_us is None or not math.isfinite(self.inference_avg_us):
            raise BenchmarkOutputError("no steady-state inference average in the output")
        return self.inference_avg_us / 1000.0

    def to_dict(self) -> dict[str, Any]:
        def stats(s: LatencyStats | None) -> dict[str, Any] | None:
            return None if s is None else {"count": s.count, **s.values}

        return {
            "init_us": self.init_us,
            "first_inference_us": self.first_inference_us,
            "warmup_avg_us": self.warmup_avg_us,
            "inference_avg_us": self.inference_avg_us,
            "warmup": stats(self.warmup),
            "inference": stats(self.inference),
            "model_size_mb": self.model_size_mb,
            "memory_mb": dict(self.memory_mb),
            "memory_kind": self.memory_kind,
        }


def _stat_line(line: str) -> LatencyStats | None:
    if not _STAT_RE.search(line):
        return None
    head = line[: line.index("count=")]
    if "Timings" in head or "Memory" in head:  # op-profiling tables, not inference runs
        return None
    pairs = {k.lower(): v for k, v in _KV_RE.findall(line[line.index("count=") :])}
    count = int(float(pairs.pop("count")))
    return LatencyStats(count, {k: _num(v) for k, v in pairs.items()})


def parse_benchmark_model(text: str) -> BenchmarkModelOutput:
    """Parse TFLite ``benchmark_model`` / ``lce_benchmark_model`` output.

    Raises :class:`BenchmarkOutputError` when it holds no steady-state inference time (the
    tool failed, e.g. ``Benchmarking failed.``), quoting the tool's error lines."""
    out = BenchmarkModelOutput()
    stats: list[LatencyStats] = []
    for raw in text.splitlines():
        line = raw.rstrip()
        s = _stat_line(line)
        if s is not None:
            stats.append(s)
            continue
        m = _SUMMARY_RE.search(line)
        if m:
            for label, value in _PAIR_RE.findall(m.group(1)):
                key = _SUMMARY_FIELDS.get(label.strip().lower())
                if key:
                    setattr(out, key, _num(value))
            continue
        if m := _SIZE_RE.search(line):
            out.model_size_mb = _num(m.group(1))
        elif m := _SESSION_RE.search(line):
            out.session_init_ms = _num(m.group(1))
        elif m := _MEMORY_RE.search(line):
            out.memory_kind = "peak" if m.group(1).lower().startswith("peak") else "delta"
            out.memory_mb = {"init": _num(m.group(2)), "overall": _num(m.group(3))}
        elif "ERROR" in line or "failed" in line.lower():
            out.errors.append(line.strip())
    if stats:
        # the tool prints the warm-up line, then the timed-runs line (pasted fragments may
        # keep only the latter): the last line is the timed runs
        out.inference = stats[-1]
        if len(stats) > 1:
            out.warmup = stats[-2]
    if out.inference_avg_us is None and out.inference is not None:
        out.inference_avg_us = out.inference.avg_us
    if out.warmup_avg_us is None and out.warmup is not None:
        out.warmup_avg_us = out.warmup.avg_us
    if out.inference_avg_us is None or not math.isfinite(out.inference_avg_us):
        why = "; ".join(out.errors[-3:]) or "no 'Inference timings' or 'count=' lines"
        raise BenchmarkOutputError(f"benchmark_model output has no inference timings: {why}")
    return out


# ----------------------------------------------------------------------------- google-benchmark

_UNIT_MS = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}
# name suffixes of the per-benchmark aggregates over repetitions; releases without
# ``run_type`` (and the console table) tell aggregates from runs only by these
_AGGREGATES = ("mean", "median", "stddev", "cv")


def _aggregate_suffix(name: str) -> str:
    return next((a for a in _AGGREGATES if name.endswith("_" + a)), "")


@dataclass
class GBenchRun:
    name: str
    real_time: float
    cpu_time: float
    time_unit: str
    iterations: int | None = None
    run_name: str = ""
    run_type: str = "iteration"  # or "aggregate" (mean, median, stddev, cv … of repetitions)
    aggregate_name: str = ""
    threads: int = 1
    error: str = ""  # non-empty when the run failed (``error_occurred``)
    repetition_index: int | None = None  # JSON of releases that number repetitions

    def _ms(self, v: float) -> float:
        try:
            return v * _UNIT_MS[self.time_unit]
        except KeyError:
            raise BenchmarkOutputError(
                f"unknown time_unit {self.time_unit!r} of {self.name!r}"
            ) from None

    @property
    def real_time_ms(self) -> float:
        return self._ms(self.real_time)

    @property
    def cpu_time_ms(self) -> float:
        return self._ms(self.cpu_time)


@dataclass
class GBenchOutput:
    format: str  # json | console
    context: dict[str, Any]
    runs: list[GBenchRun]

    def iterations_of(self, name: str) -> list[GBenchRun]:
        """Per-repetition runs of benchmark ``name`` (``name`` or ``name/…``), no aggregates,
        no errored runs."""
        return [
            r
            for r in self.runs
            if r.run_type != "aggregate"
            and not r.error
            and (r.run_name or r.name).split("/")[0] == name
        ]

    @property
    def errors(self) -> list[GBenchRun]:
        """Runs that failed (``error_occurred``), aggregates and other benchmarks included."""
        return [r for r in self.runs if r.error]


def _json_object(text: str) -> dict[str, Any]:
    start = re.search(r"^\s*\{", text, re.MULTILINE)
    if not start:
        raise BenchmarkOutputError("no JSON object in google-benchmark output")
    body = text[start.start() :]
    dec = json.JSONDecoder()
    try:
        return dec.raw_decode(body.lstrip())[0]
    except json.JSONDecodeError:
        pass
    # a benchmark (or the library) may print plain lines into stdout mid-JSON; drop lines that
    # cannot be part of pretty-printed JSON and try once more
    keep = [
        ln
        for ln in body.splitlines()
        if re.match(r'\s*(?:[{}\[\]"]|$|[-+0-9.]|true|false|null)', ln)
    ]
    try:
        return dec.raw_decode("\n".join(keep).lstrip())[0]
    except json.JSONDecodeError as exc:
        raise BenchmarkOutputError(f"google-benchmark JSON is not parsable: {exc}") from exc


def parse_google_benchmark_json(text: str) -> GBenchOutput:
    """``--benchmark_format=json`` output; text before the JSON object (log lines) is skipped.

    Releases without ``run_type`` (e.g. the one daBNN pins) mark aggregates only by their
    name suffix (``_mean``, ``_median``, ``_stddev``, ``_cv``): those become ``aggregate``
    runs. A failed run (``error_occurred``) is kept with its ``error``. Raises
    :class:`BenchmarkOutputError` on malformed or cut-off JSON."""
    doc = _json_object(text)
    if not isinstance(doc, dict) or not isinstance(doc.get("benchmarks"), list):
        raise BenchmarkOutputError("google-benchmark JSON without a 'benchmarks' list")
    runs = []
    for i, b in enumerate(doc["benchmarks"]):
        if not isinstance(b, dict) or "name" not in b:
            continue
        err = ""
        if b.get("error_occurred"):
            err = str(b.get("error_message") or "error_occurred, no error_message")
        if "real_time" not in b and not err:
            continue  # BigO / RMS aggregates carry coefficients, not times
        name = str(b["name"])
        run_name = str(b.get("run_name") or "")
        agg = str(b.get("aggregate_name") or "")
        run_type = b.get("run_type")
        if run_type is None:  # older releases: only the name tells an aggregate
            suffix = _aggregate_suffix(name)
            run_type = "aggregate" if suffix else "iteration"
            agg = agg or suffix
            if suffix and not run_name:
                run_name = name[: -len(suffix) - 1]
        elif run_type == "aggregate" and not agg:
            agg = _aggregate_suffix(name)
        try:
            runs.append(
                GBenchRun(
                    name=name,
                    real_time=float(b.get("real_time", math.nan)),
                    cpu_time=float(b.get("cpu_time", math.nan)),
                    time_unit=str(b.get("time_unit", "ns")),  # the library's default unit
                    iterations=int(b["iterations"]) if "iterations" in b else None,
                    run_name=run_name,
                    run_type=str(run_type),
                    aggregate_name=agg,
                    threads=int(b.get("threads", 1)),
                    error=err,
                    repetition_index=(
                        int(b["repetition_index"])
                        if b.get("repetition_index") is not None
                        else None
                    ),
                )
            )
        except (TypeError, ValueError) as exc:
            raise BenchmarkOutputError(
                f"google-benchmark entry {i} ({name!r}) is malformed: {exc}"
            ) from exc
    return GBenchOutput("json", dict(doc.get("context") or {}), runs)


_CONSOLE_RE = re.compile(
    rf"^(?P<name>\S+)\s+(?P<real>{_NUM})\s*(?P<ru>ns|us|ms|s)?\s+(?P<cpu>{_NUM})\s*"
    rf"(?P<cu>ns|us|ms|s)?\s+(?P<it>\d+)(?:\s|$)"
)
_HEADER_UNIT_RE = re.compile(r"Time\((ns|us|ms|s)\)")


def parse_google_benchmark_console(text: str) -> GBenchOutput:
    """The console table (``Benchmark  Time  CPU  Iterations``); old builds put the unit in
    the header (``Time(ns)``), newer ones after each number."""
    unit = "ns"
    runs = []
    in_table = False
    for line in text.splitlines():
        if line.lstrip().startswith("Benchmark") and "Iterations" in line:
            in_table = True
            if m := _HEADER_UNIT_RE.search(line):
                unit = m.group(1)
            continue
        if not in_table or line.startswith("-"):
            continue
        m = _CONSOLE_RE.match(line)
        if not m:
            continue
        name = m.group("name")
        agg = _aggregate_suffix(name)
        runs.append(
            GBenchRun(
                name=name,
                real_time=_num(m.group("real")),
                cpu_time=_num(m.group("cpu")),
                time_unit=m.group("ru") or unit,
                iterations=int(m.group("it")),
                run_name=name[: -len(agg) - 1] if agg else name,
                run_type="aggregate" if agg else "iteration",
                aggregate_name=agg,
            )
        )
    if not runs:
        raise BenchmarkOutputError("no google-benchmark result rows in the output")
    return GBenchOutput("console", {}, runs)


def parse_google_benchmark(text: str) -> GBenchOutput:
    """JSON (``--benchmark_format=json``) or console output, whichever ``text`` is."""
    if re.search(r'^\s*"benchmarks"\s*:', text, re.MULTILINE):
        return parse_google_benchmark_json(text)
    return parse_google_benchmark_console(text)

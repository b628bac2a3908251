"""Runner for daBNN (JDAI-CV/dabnn) through its ``benchmark_single_model`` tool.

``benchmark_single_model MODEL.dab [google-benchmark flags]`` loads the model with daBNN's
runtime and times ``Net::run`` in a google-benchmark loop named ``single_model``. We ask for
JSON and ``--benchmark_repetitions=N`` with every repetition reported: each repetition gives
one sample, its ``real_time`` = wall time per inference averaged over that repetition's
``iterations`` (google-benchmark picks the count so a repetition lasts ≥ 0.5 s). So a sample
is a mean over several inferences, not a single one; ``extra.iterations_per_sample`` says how
many.

Warm-up: google-benchmark runs untimed trial loops before each repetition to size it; with
``warmup > 0`` one extra leading repetition is run and discarded as well.

daBNN is single-threaded: any other thread count is refused. The binary is found from the
constructor, ``$BNNBENCH_DABNN_BENCHMARK``, or ``benchmark_single_model`` on ``PATH``.
The tool feeds an uninitialised input buffer (its code, not ours); binary-conv timings do not
depend on the values.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from agent.runners.base import RunnerError, RunOutput
from agent.runners.benchmark_output import BenchmarkOutputError, parse_google_benchmark_json

ENV_BINARY = "BNNBENCH_DABNN_BENCHMARK"
BINARY_NAME = "benchmark_single_model"
BENCHMARK_NAME = "single_model"  # what benchmark_single_model.cpp registers
# uncaught exceptions of daBNN's loader that will recur on every try with this model
_MODEL_ERRORS = re.compile(r"Not supported op|is not satisfied|version|Unknown|Not align")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _reason(stderr: str) -> str:
    """The ``what():`` of daBNN's uncaught exception, else the last stderr lines."""
    m = re.findall(r"what\(\):\s*(.+)", stderr)
    if m:
        return m[-1].strip()
    tail = [line for line in stderr.strip().splitlines() if line.strip()][-3:]
    return " | ".join(tail) or "no output on stderr"


class DabnnRunner:
    name = "dabnn"

    def __init__(self, binary: str | Path | None = None, timeout_s: float = 3600.0) -> None:
        found = binary or os.environ.get(ENV_BINARY) or shutil.which(BINARY_NAME) or ""
        self.binary = Path(found) if found else None
        self.timeout_s = timeout_s
        self.unavailable_reason: str | None = None
        self._digest: str | None = None

    def available(self) -> bool:
        b = self.binary
        if b is None:
            self.unavailable_reason = (f"no {BINARY_NAME}: set ${ENV_BINARY} or put it on PATH")
        elif not b.is_file() or not os.access(b, os.X_OK):
            self.unavailable_reason = f"{b} is not an executable file"
        else:
            self.unavailable_reason = None
        return self.unavailable_reason is None

    def version(self) -> str:
        # daBNN has no version string: the binary's hash identifies the build
        if not self.available():
            raise RunnerError(self.unavailable_reason or "daBNN runner unavailable")
        assert self.binary is not None
        if self._digest is None:
            self._digest = _sha256(self.binary)
        return f"dabnn {BINARY_NAME} sha256:{self._digest[:16]}"

    def command(self, artifact_path: Path, repetitions: int) -> list[str]:
        assert self.binary is not None
        # benchmark_single_model takes the model as argv[1], before google-benchmark's flags
        return [str(self.binary), str(artifact_path), "--benchmark_format=json",
                f"--benchmark_repetitions={repetitions}",
                "--benchmark_report_aggregates_only=false"]

    def benchmark(self, artifact_path: Path, threads: int, warmup: int, runs: int) -> RunOutput:
        if threads != 1:
            raise RunnerError(f"daBNN is single-threaded; the job asks for {threads} threads",
                              retryable=False)
        if runs < 1:
            raise RunnerError(f"runs must be at least 1, got {runs}", retryable=False)
        version = self.version()
        discard = 1 if warmup > 0 else 0
        cmd = self.command(Path(artifact_path), runs + discard)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=self.timeout_s,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise RunnerError(f"{BINARY_NAME} ran past {self.timeout_s:g} s") from exc
        except OSError as exc:
            raise RunnerError(f"cannot start {self.binary}: {exc}") from exc
        if proc.returncode != 0:
            why = _reason(proc.stderr)
            raise RunnerError(f"daBNN failed on the model (exit {proc.returncode}): {why}",
                              retryable=not _MODEL_ERRORS.search(why))
        try:
            parsed = parse_google_benchmark_json(proc.stdout)
            if parsed.errors:
                r = parsed.errors[0]
                raise BenchmarkOutputError(f"benchmark {r.run_name or r.name!r} failed: "
                                           f"{r.error}")
            # per-repetition runs (aggregates dropped), times in ms (unknown units raise)
            got = [(r.real_time_ms, r.cpu_time_ms, r.iterations or 0)
                   for r in parsed.iterations_of(BENCHMARK_NAME)]
        except BenchmarkOutputError as exc:
            raise RunnerError(f"{BINARY_NAME} output: {exc}") from exc
        if not all(math.isfinite(real) and math.isfinite(cpu) for real, cpu, _ in got):
            raise RunnerError(f"{BINARY_NAME} output: a repetition has no real_time/cpu_time")
        if len(got) != runs + discard:
            raise RunnerError(f"{BINARY_NAME} reported {len(got)} repetitions, expected "
                              f"{runs + discard}")
        timed = got[discard:]
        ctx = parsed.context
        extra: dict[str, Any] = {
            "binary": str(self.binary),
            "command": cmd,
            "timer": "google-benchmark real_time, mean per inference over each repetition",
            "iterations_per_sample": [it for _, _, it in timed],
            "cpu_time_ms": [cpu for _, cpu, _ in timed],
            "warmup": (f"{discard} leading repetition discarded" if discard else "none")
                      + " + google-benchmark's own sizing loops",
            "threads": "1 (daBNN is single-threaded)",
            "google_benchmark_context": {k: ctx[k] for k in (
                "num_cpus", "mhz_per_cpu", "cpu_scaling_enabled", "library_build_type",
                "library_version") if k in ctx},
        }
        if ctx.get("library_build_type") == "debug":
            extra["warning"] = "google-benchmark was built in debug mode"
        return RunOutput(samples_ms=[real for real, _, _ in timed],
                         runtime_version=version, extra=extra)

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

Measurement protocol: ``min_time_ms`` lengthens each repetition (``--benchmark_min_time``,
seconds, a plain number as the pinned 2019 google-benchmark wants and later ones still accept)
to ``min_time_ms / runs`` when that exceeds google-benchmark's 0.5 s, so the samples stay
``runs`` means; ``warmup_ms`` discards as many leading repetitions as it takes to cover it.
``affinity`` pins with ``taskset``.

daBNN is single-threaded: any other thread count is refused. On this machine the binary is
found from the constructor, ``$BNNBENCH_DABNN_BENCHMARK``, or ``benchmark_single_model`` on
``PATH``; on a board behind a transport (ssh, adb) it is the device path given by
devices.toml's ``dabnn_benchmark`` and the model is staged into the device's sha256-keyed
cache. Either way it runs through a Transport (this machine: ``LocalTransport``), with the
device's exec wrapper and pinning built like the native CLI's.
The tool feeds an uninitialised input buffer (its code, not ours); binary-conv timings do not
depend on the values.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from agent.runners.base import RunnerError, RunOutput, RunPlan
from agent.runners.benchmark_output import BenchmarkOutputError, parse_google_benchmark_json
from agent.runners.device_command import DeviceProgram, DeviceTarget, run_timeout
from agent.transports.base import TransportError
from bnnbench.settings import RunnerSettings

ENV_BINARY = RunnerSettings.env_var("dabnn_benchmark")
BINARY_NAME = "benchmark_single_model"
BENCHMARK_NAME = "single_model"  # what benchmark_single_model.cpp registers
GBENCH_MIN_TIME_S = 0.5  # google-benchmark's default --benchmark_min_time per repetition
# uncaught exceptions of daBNN's loader that will recur on every try with this model
_MODEL_ERRORS = re.compile(r"Not supported op|is not satisfied|version|Unknown|Not align")


def _reason(stderr: str) -> str:
    """The ``what():`` of daBNN's uncaught exception, else the last stderr lines."""
    m = re.findall(r"what\(\):\s*(.+)", stderr)
    if m:
        return m[-1].strip()
    tail = [line for line in stderr.strip().splitlines() if line.strip()][-3:]
    return " | ".join(tail) or "no output on stderr"


class DabnnRunner:
    name = "dabnn"

    def __init__(
        self,
        binary: str | Path | None = None,
        timeout_s: float = 3600.0,
        *,
        target: DeviceTarget = DeviceTarget(),
        settings: RunnerSettings | None = None,
    ) -> None:
        configured = (settings or RunnerSettings()).dabnn_benchmark
        path = DeviceProgram.locate(binary, configured, BINARY_NAME, target.device_side)
        self.program = DeviceProgram(path, BINARY_NAME, target)
        self.timeout_s = timeout_s
        self.unavailable_reason: str | None = None

    @property
    def binary(self) -> str:
        return self.program.path

    def available(self) -> bool:
        b, where = self.binary, self.program.transport.address
        try:
            ok = self.program.executable()
        except TransportError as exc:
            self.unavailable_reason = f"{where} unreachable: {exc}"
            return False
        if ok:
            self.unavailable_reason = None
        elif not b:
            self.unavailable_reason = (
                f"no {BINARY_NAME} path for this device (devices.toml: dabnn_benchmark)"
                if self.program.device_side
                else f"no {BINARY_NAME}: set ${ENV_BINARY} or put it on PATH"
            )
        else:
            self.unavailable_reason = (
                f"{b} is not an executable file on {where}"
                if self.program.device_side
                else f"{b} is not an executable file"
            )
        return ok

    def version(self) -> str:
        # daBNN has no version string: the binary's hash identifies the build
        if not self.available():
            raise RunnerError(self.unavailable_reason or "daBNN runner unavailable")
        return f"dabnn {BINARY_NAME} {self.program.build_id(16)}"

    def command(
        self, artifact_path: str | Path, repetitions: int, min_time_s: float | None = None
    ) -> list[str]:
        # benchmark_single_model takes the model as argv[1], before google-benchmark's flags
        argv = [
            self.binary,
            str(artifact_path),
            "--benchmark_format=json",
            f"--benchmark_repetitions={repetitions}",
            "--benchmark_report_aggregates_only=false",
        ]
        if min_time_s is not None:
            argv.append(f"--benchmark_min_time={min_time_s:.6g}")
        return argv

    def benchmark(self, artifact_path: Path, plan: RunPlan) -> RunOutput:
        if plan.threads != 1:
            raise RunnerError(
                f"daBNN is single-threaded; the job asks for {plan.threads} threads",
                retryable=False,
            )
        warmup, runs, p = plan.warmup, plan.runs, plan.protocol
        version = self.version()
        # a repetition lasts >= its min time; stretch it so `runs` of them cover min_time_ms
        per_rep_s = GBENCH_MIN_TIME_S
        min_time_flag: float | None = None
        if p.min_time_ms / 1e3 / runs > GBENCH_MIN_TIME_S:
            per_rep_s = min_time_flag = p.min_time_ms / 1e3 / runs
        discard = 1 if warmup > 0 else 0
        if p.warmup_ms:
            discard = max(discard, math.ceil(p.warmup_ms / 1e3 / per_rep_s))
        model = self.program.stage(Path(artifact_path), ".dab")
        affinity = p.affinity or self.program.affinity
        command, pinned, cpus = self.program.command(
            self.command(model, runs + discard, min_time_flag), affinity, plan.threads
        )
        timeout = run_timeout(self.timeout_s, (runs + discard) * per_rep_s)
        res = self.program.run(command, timeout)
        if res.exit_code != 0:
            why = _reason(res.stderr)
            raise RunnerError(
                f"daBNN failed on the model (exit {res.exit_code}): {why}",
                retryable=not _MODEL_ERRORS.search(why),
            )
        try:
            parsed = parse_google_benchmark_json(res.stdout)
            if parsed.errors:
                r = parsed.errors[0]
                raise BenchmarkOutputError(f"benchmark {r.run_name or r.name!r} failed: {r.error}")
            # per-repetition runs (aggregates dropped), times in ms (unknown units raise)
            got = [
                (r.real_time_ms, r.cpu_time_ms, r.iterations or 0)
                for r in parsed.iterations_of(BENCHMARK_NAME)
            ]
        except BenchmarkOutputError as exc:
            raise RunnerError(f"{BINARY_NAME} output: {exc}") from exc
        if not all(math.isfinite(real) and math.isfinite(cpu) for real, cpu, _ in got):
            raise RunnerError(f"{BINARY_NAME} output: a repetition has no real_time/cpu_time")
        if len(got) != runs + discard:
            raise RunnerError(
                f"{BINARY_NAME} reported {len(got)} repetitions, expected {runs + discard}"
            )
        timed = got[discard:]
        ctx = parsed.context
        extra: dict[str, Any] = {
            "binary": self.binary,
            "model_on_device": model,
            "command": command,
            "timer": "google-benchmark real_time, mean per inference over each repetition",
            "iterations_per_sample": [it for _, _, it in timed],
            "cpu_time_ms": [cpu for _, cpu, _ in timed],
            "warmup": (f"{discard} leading repetition(s) discarded" if discard else "none")
            + " + google-benchmark's own sizing loops",
            "threads": "1 (daBNN is single-threaded)",
            "protocol_applied": {
                "benchmark_min_time_s": min_time_flag,  # None: google-benchmark's 0.5 s
                "discarded_repetitions": discard,
                "min_time_ms": p.min_time_ms,
                "warmup_ms": p.warmup_ms,
                "max_runs": "not applicable (samples stay `runs`; repetitions lengthen)",
            },
            "timeout_s": timeout,
            "affinity": affinity,
            "affinity_cpus": cpus,
            "pinned": pinned,
            "exec_wrapper": self.program.exec_wrapper,
            "google_benchmark_context": {
                k: ctx[k]
                for k in (
                    "num_cpus",
                    "mhz_per_cpu",
                    "cpu_scaling_enabled",
                    "library_build_type",
                    "library_version",
                )
                if k in ctx
            },
        }
        if ctx.get("library_build_type") == "debug":
            extra["warning"] = "google-benchmark was built in debug mode"
        return RunOutput(
            samples_ms=[real for real, _, _ in timed], runtime_version=version, extra=extra
        )

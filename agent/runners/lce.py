"""Runner for Larq Compute Engine ``.tflite`` models.

Two ways to run, chosen by ``mode`` (env ``BNNBENCH_LCE_MODE``: ``auto`` | ``python`` |
``binary``; auto prefers the Python interpreter):

* ``python`` — LCE's interpreter in-process, where the ``larq-compute-engine`` wheel exists
  (x86_64 Linux, macOS; no Linux aarch64 wheel). Its pybind module is loaded straight from the
  installed package: importing ``larq_compute_engine`` would import TensorFlow (the package's
  ``__init__`` pulls in the converter), which an agent must not load and need not have. Each
  sample is ``time.perf_counter_ns`` around one ``predict`` call (the interpreter's only
  entry point: input copy in, invoke, output copy out).
* ``binary`` — LCE's ``lce_benchmark_model`` (TFLite's ``benchmark_model`` with LCE's ops;
  release assets ``lce_benchmark_model_aarch64`` / ``_aarch32`` / ``_android_arm64``). On this
  machine its path comes from ``BNNBENCH_LCE_BENCHMARK_MODEL`` or ``lce_benchmark_model`` on
  PATH; on a board behind a transport (ssh, adb) it is the device path given by devices.toml's
  ``lce_benchmark`` and the model is staged into the device's sha256-keyed cache. Either way
  the tool runs through a Transport (this machine: ``LocalTransport``), pinned with
  ``taskset`` and prefixed with the device's exec wrapper like the native CLI. The tool
  reports only aggregates (avg, std, min, max over its runs), so each sample is one process:
  ``--warmup_runs=<warmup> --num_runs=1``, its ``Inference (avg)`` being that one timed run.
  The tool's own aggregate lines are kept in ``extra`` for reference.

Measurement protocol: ``warmup_ms`` is each process's ``--warmup_min_secs`` (each sample's
process warms up afresh); ``min_time_ms`` adds processes (samples) until the timed runs add up
to it, capped at ``max_runs`` (default 100 × runs) — ``--min_secs`` would fold several runs
into one average. The Python mode applies the same rules in-process; ``affinity`` pins only
the binary (``taskset``).

XNNPACK (float ops only) is off unless ``BNNBENCH_LCE_USE_XNNPACK=1``: the Python
interpreter's default, passed explicitly to the binary (whose default is on) so both modes
measure the same thing.

The environment variables are read by ``bnnbench.settings.RunnerSettings``; constructor
arguments override them.
"""

from __future__ import annotations

import importlib.util
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from agent.runners.base import RunnerError, RunOutput, RunPlan
from agent.runners.benchmark_output import BenchmarkOutputError, parse_benchmark_model
from agent.runners.device_command import DeviceProgram, DeviceTarget, run_timeout
from agent.runners.tflite_bench import INPUT_SEED, make_input
from agent.transports.base import RunCancelled, Transport, TransportError, check_cancelled
from bnnbench.settings import RunnerSettings

MODES = ("auto", "python", "binary")
TOOL = "lce_benchmark_model"
BINARY_ENV = RunnerSettings.env_var("lce_benchmark_model")
_WRAPPER = "larq_compute_engine.tflite.python.interpreter_wrapper_lite"
TOOL_MAX_SECS = 150.0  # benchmark_model's --max_secs default: caps the warm-up loop too


def wrapper_path() -> Path | None:
    """The interpreter's extension module inside the installed wheel, found without
    importing the package."""
    spec = importlib.util.find_spec("larq_compute_engine")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "tflite" / "python"
    found = sorted(folder.glob("interpreter_wrapper_lite*.so")) + sorted(
        folder.glob("interpreter_wrapper_lite*.pyd")
    )
    return found[0] if found else None


def load_wrapper() -> Any:
    """LCE's ``interpreter_wrapper_lite`` module (pybind, depends on nothing but libc/libstdc++).

    Registered in ``sys.modules`` under its package name, so a later ordinary import (the
    converter's verification imports it through the package) reuses it instead of loading
    the same pybind types twice."""
    import importlib.machinery
    import sys

    if _WRAPPER in sys.modules:
        return sys.modules[_WRAPPER]
    path = wrapper_path()
    if path is None:
        raise RunnerError(
            "larq-compute-engine is not installed (no interpreter module)", retryable=False
        )
    loader = importlib.machinery.ExtensionFileLoader(_WRAPPER, str(path))
    spec = importlib.util.spec_from_loader(_WRAPPER, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    sys.modules[_WRAPPER] = module
    return module


def _lce_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("larq-compute-engine")
    except metadata.PackageNotFoundError:
        return "unknown"


class LceRunner:
    name = "lce"

    def __init__(
        self,
        mode: str | None = None,
        binary: str | os.PathLike[str] | None = None,
        use_xnnpack: bool | None = None,
        timeout_s: float | None = None,
        *,
        target: DeviceTarget = DeviceTarget(),
        settings: RunnerSettings | None = None,
    ) -> None:
        tuning = settings or RunnerSettings()
        self.mode = mode or tuning.lce_mode
        if self.mode not in MODES:
            raise ValueError(f"LCE runner mode {self.mode!r}; choose from {', '.join(MODES)}")
        # the interpreter runs in this process: not on a board, nor under an emulator
        self.python_allowed = not target.device_side and not target.exec_wrapper
        if self.mode == "python" and not self.python_allowed:
            raise ValueError(
                "LCE's python mode runs on this machine only; a device behind a "
                "transport or an exec wrapper runs lce_benchmark_model"
            )
        located = DeviceProgram.locate(binary, tuning.lce_benchmark_model, TOOL, target.device_side)
        self.program = DeviceProgram(located, TOOL, target)
        self.use_xnnpack = tuning.lce_use_xnnpack if use_xnnpack is None else use_xnnpack
        self.timeout_s = timeout_s or tuning.lce_timeout_s
        self.unavailable_reason: str | None = None

    @property
    def binary(self) -> str:
        return self.program.path

    @property
    def transport(self) -> Transport:
        return self.program.transport

    @property
    def affinity(self) -> str:
        return self.program.affinity

    # -- which way --------------------------------------------------------------------
    def _python_ok(self) -> bool:
        return self.python_allowed and wrapper_path() is not None

    def resolved_mode(self) -> str | None:
        if self.mode in ("auto", "python") and self._python_ok():
            return "python"
        if self.mode in ("auto", "binary") and self.program.executable():
            return "binary"
        return None

    def available(self) -> bool:
        try:
            mode = self.resolved_mode()
        except TransportError as exc:
            self.unavailable_reason = f"{self.transport.address} unreachable: {exc}"
            return False
        if mode is None:
            if self.program.device_side:
                self.unavailable_reason = (
                    f"no executable {TOOL} at {self.binary} on {self.transport.address}"
                    if self.binary
                    else f"no {TOOL} path for this device (devices.toml: lce_benchmark)"
                )
            else:
                self.unavailable_reason = {
                    "python": "larq-compute-engine is not installed",
                    "binary": f"no executable {TOOL} (set {BINARY_ENV})",
                }.get(
                    self.mode, f"neither larq-compute-engine nor {TOOL} (set {BINARY_ENV}) is here"
                )
            return False
        self.unavailable_reason = None
        return True

    def version(self) -> str:
        if self.resolved_mode() == "binary":
            return f"{TOOL} {Path(self.binary).name} {self.program.build_id(12)}"
        return f"larq-compute-engine {_lce_version()} (python interpreter)"

    # -- benchmark --------------------------------------------------------------------
    def benchmark(self, artifact_path: Path, plan: RunPlan) -> RunOutput:
        mode = self.resolved_mode()
        if mode is None:
            self.available()
            raise RunnerError(f"LCE runner not available: {self.unavailable_reason}")
        artifact_path = Path(artifact_path)
        if mode == "python":
            out = self._benchmark_python(artifact_path, plan)
        else:
            out = self._benchmark_binary(artifact_path, plan)
        out.extra.update(self._artifact_info(artifact_path))
        return out

    def _artifact_info(self, path: Path) -> dict[str, Any]:
        try:  # provenance only: which LCE ops the timed model has
            from converters.backends.tflite.flatbuffer import inspect_tflite

            fb = inspect_tflite(path)
        except Exception as exc:  # not fatal: the timings stand without it
            return {"artifact_ops": f"unreadable ({type(exc).__name__})"}
        return {"lce_bconv2d_ops": fb.count("LceBconv2d"), "custom_ops": fb.custom_ops}

    def _benchmark_python(self, path: Path, plan: RunPlan) -> RunOutput:
        threads, warmup, runs, p = plan.threads, plan.warmup, plan.runs, plan.protocol
        wrapper = load_wrapper()
        try:
            interp = wrapper.LiteInterpreter(
                path.read_bytes(), threads, False, False, self.use_xnnpack
            )
        except Exception as exc:  # the artifact's hash was checked: the runtime rejects it
            raise RunnerError(
                f"LCE interpreter cannot load the model: {exc}", retryable=False
            ) from exc
        shapes = [tuple(int(d) for d in s) for s in interp.input_shapes]
        if len(shapes) != 1:
            raise RunnerError(
                f"model has {len(shapes)} inputs; one image input expected", retryable=False
            )
        x = make_input(shapes[0])  # NHWC, the same deterministic zero-free input as native
        cap = plan.run_cap
        try:
            y = interp.predict([x])  # also proves the graph runs before timing
            warm_until = time.perf_counter() + p.warmup_ms / 1e3
            warmed = 0
            while warmed < warmup or time.perf_counter() < warm_until:
                check_cancelled()  # in this process: it cannot be killed, it stops itself
                interp.predict([x])
                warmed += 1
            samples: list[float] = []
            while len(samples) < runs or (sum(samples) < p.min_time_ms and len(samples) < cap):
                check_cancelled()  # outside the timed region
                t0 = time.perf_counter_ns()
                interp.predict([x])
                samples.append((time.perf_counter_ns() - t0) / 1e6)
        except RunCancelled:
            raise
        except Exception as exc:
            raise RunnerError(f"LCE interpreter failed: {exc}") from exc
        y0 = np.asarray(y[0])
        return RunOutput(
            samples_ms=samples,
            runtime_version=self.version(),
            extra={
                "mode": "python",
                "input_shape": list(shapes[0]),
                "input_seed": INPUT_SEED,
                "output_shape": list(y0.shape),
                "output_finite": bool(np.isfinite(y0).all()),
                "use_xnnpack": self.use_xnnpack,
                "warmup_runs": warmed,
                "protocol_applied": {
                    "warmup_ms": p.warmup_ms,
                    "min_time_ms": p.min_time_ms,
                    "max_runs": cap,
                    "affinity": "not applied (in-process)",
                },
                "affinity_cpus": None,
                "timer": "time.perf_counter_ns around LiteInterpreter.predict "
                "(input copy, invoke, output copy)",
            },
        )

    def command(
        self, path: str | Path, threads: int, warmup: int, warmup_s: float = 0.0
    ) -> list[str]:
        """One ``lce_benchmark_model`` call timing a single run after ``warmup`` runs (and at
        least ``warmup_s`` seconds of them)."""
        argv = [
            self.binary,
            f"--graph={path}",
            f"--num_threads={threads}",
            f"--warmup_runs={warmup}",
            f"--warmup_min_secs={warmup_s:g}",
            "--num_runs=1",
            "--min_secs=0",  # exactly one timed run
            f"--use_xnnpack={'true' if self.use_xnnpack else 'false'}",
        ]
        if warmup_s >= TOOL_MAX_SECS:  # the tool would cut the warm-up short at max_secs
            argv.append(f"--max_secs={math.ceil(warmup_s) + 60}")
        return argv

    def _benchmark_binary(self, path: Path, plan: RunPlan) -> RunOutput:
        threads, warmup, runs, p = plan.threads, plan.warmup, plan.runs, plan.protocol
        model = self.program.stage(path, ".tflite")
        affinity = p.affinity or self.affinity
        warmup_s = p.warmup_ms / 1e3
        command, pinned, cpus = self.program.command(
            self.command(model, threads, warmup, warmup_s), affinity, threads
        )
        timeout = run_timeout(self.timeout_s, warmup_s)
        cap = plan.run_cap
        samples: list[float] = []
        init_us: list[float] = []
        first_us: list[float] = []
        last = None
        while len(samples) < runs or (sum(samples) < p.min_time_ms and len(samples) < cap):
            res = self.program.run(command, timeout)
            try:
                last = parse_benchmark_model(res.stdout + res.stderr)
            except BenchmarkOutputError as exc:
                raise RunnerError(
                    f"lce_benchmark_model exit {res.exit_code}: {exc}", retryable=res.exit_code == 0
                ) from exc
            if res.exit_code != 0:
                raise RunnerError(f"lce_benchmark_model exit {res.exit_code}")
            samples.append(last.inference_avg_ms)
            if last.init_us is not None:
                init_us.append(last.init_us)
            if last.first_inference_us is not None:
                first_us.append(last.first_inference_us)
        assert last is not None
        return RunOutput(
            samples_ms=samples,
            runtime_version=self.version(),
            extra={
                "mode": "binary",
                "binary": self.binary,
                "model_on_device": model,
                "command": command,
                "use_xnnpack": self.use_xnnpack,
                "timer": "lce_benchmark_model, one process per sample (warm-up runs, then "
                "one timed run); its 'Inference (avg)'",
                "init_ms_median": float(np.median(init_us)) / 1e3 if init_us else None,
                "first_inference_ms_median": (
                    float(np.median(first_us)) / 1e3 if first_us else None
                ),
                "last_tool_output": last.to_dict(),
                "protocol_applied": {
                    "warmup_min_secs": warmup_s,
                    "min_time_ms": p.min_time_ms,
                    "max_runs": cap,
                    "processes": len(samples),
                },
                "timeout_s": timeout,
                "affinity": affinity,
                "affinity_cpus": cpus,
                "pinned": pinned,
                "exec_wrapper": self.program.exec_wrapper,
            },
        )

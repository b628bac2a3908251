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
  release assets ``lce_benchmark_model_aarch64`` / ``_aarch32`` / ``_android_arm64``), path
  from ``BNNBENCH_LCE_BENCHMARK_MODEL`` or ``lce_benchmark_model`` on PATH. The tool reports
  only aggregates (avg, std, min, max over its runs), so each sample is one process:
  ``--warmup_runs=<warmup> --num_runs=1``, its ``Inference (avg)`` being that one timed run.
  The tool's own aggregate lines are kept in ``extra`` for reference.

XNNPACK (float ops only) is off unless ``BNNBENCH_LCE_USE_XNNPACK=1``: the Python
interpreter's default, passed explicitly to the binary (whose default is on) so both modes
measure the same thing.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

from agent.runners.base import RunnerError, RunOutput, check_run_args
from agent.runners.benchmark_output import BenchmarkOutputError, parse_benchmark_model
from agent.runners.native import INPUT_SEED, make_input

MODES = ("auto", "python", "binary")
BINARY_ENV = "BNNBENCH_LCE_BENCHMARK_MODEL"
_WRAPPER = "larq_compute_engine.tflite.python.interpreter_wrapper_lite"


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def wrapper_path() -> Path | None:
    """The interpreter's extension module inside the installed wheel, found without
    importing the package."""
    spec = importlib.util.find_spec("larq_compute_engine")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "tflite" / "python"
    found = sorted(folder.glob("interpreter_wrapper_lite*.so")) + sorted(
        folder.glob("interpreter_wrapper_lite*.pyd"))
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
        raise RunnerError("larq-compute-engine is not installed (no interpreter module)",
                          retryable=False)
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

    def __init__(self, mode: str | None = None, binary: str | os.PathLike | None = None,
                 use_xnnpack: bool | None = None, timeout_s: float | None = None) -> None:
        self.mode = mode or os.environ.get("BNNBENCH_LCE_MODE", "auto")
        if self.mode not in MODES:
            raise ValueError(f"LCE runner mode {self.mode!r}; choose from {', '.join(MODES)}")
        self.binary = str(binary) if binary else os.environ.get(BINARY_ENV) or (
            shutil.which("lce_benchmark_model") or "")
        self.use_xnnpack = (_truthy(os.environ.get("BNNBENCH_LCE_USE_XNNPACK"))
                            if use_xnnpack is None else use_xnnpack)
        self.timeout_s = timeout_s or float(os.environ.get("BNNBENCH_LCE_TIMEOUT_S", "600"))
        self.unavailable_reason: str | None = None
        self._binary_digest: str | None = None

    # -- which way --------------------------------------------------------------------
    def _python_ok(self) -> bool:
        return wrapper_path() is not None

    def _binary_ok(self) -> bool:
        return bool(self.binary) and os.path.isfile(self.binary) and os.access(self.binary,
                                                                               os.X_OK)

    def resolved_mode(self) -> str | None:
        if self.mode in ("auto", "python") and self._python_ok():
            return "python"
        if self.mode in ("auto", "binary") and self._binary_ok():
            return "binary"
        return None

    def available(self) -> bool:
        mode = self.resolved_mode()
        if mode is None:
            self.unavailable_reason = {
                "python": "larq-compute-engine is not installed",
                "binary": f"no executable lce_benchmark_model (set {BINARY_ENV})",
            }.get(self.mode, f"neither larq-compute-engine nor lce_benchmark_model "
                             f"(set {BINARY_ENV}) is here")
            return False
        self.unavailable_reason = None
        return True

    def version(self) -> str:
        mode = self.resolved_mode()
        if mode == "binary":
            if self._binary_digest is None:
                h = hashlib.sha256()
                with open(self.binary, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        h.update(chunk)
                self._binary_digest = h.hexdigest()[:12]
            return f"lce_benchmark_model {Path(self.binary).name} sha256:{self._binary_digest}"
        return f"larq-compute-engine {_lce_version()} (python interpreter)"

    # -- benchmark --------------------------------------------------------------------
    def benchmark(self, artifact_path: Path, threads: int, warmup: int, runs: int) -> RunOutput:
        check_run_args(threads, warmup, runs)
        mode = self.resolved_mode()
        if mode is None:
            self.available()
            raise RunnerError(f"LCE runner not available: {self.unavailable_reason}")
        artifact_path = Path(artifact_path)
        if mode == "python":
            out = self._benchmark_python(artifact_path, threads, warmup, runs)
        else:
            out = self._benchmark_binary(artifact_path, threads, warmup, runs)
        out.extra.update(self._artifact_info(artifact_path))
        return out

    def _artifact_info(self, path: Path) -> dict[str, Any]:
        try:  # provenance only: which LCE ops the timed model has
            from converters.tflite_inspect import inspect_tflite

            fb = inspect_tflite(path)
        except Exception as exc:  # not fatal: the timings stand without it
            return {"artifact_ops": f"unreadable ({type(exc).__name__})"}
        return {"lce_bconv2d_ops": fb.count("LceBconv2d"), "custom_ops": fb.custom_ops}

    def _benchmark_python(self, path: Path, threads: int, warmup: int,
                          runs: int) -> RunOutput:
        wrapper = load_wrapper()
        try:
            interp = wrapper.LiteInterpreter(path.read_bytes(), threads, False, False,
                                             self.use_xnnpack)
        except Exception as exc:  # the artifact's hash was checked: the runtime rejects it
            raise RunnerError(f"LCE interpreter cannot load the model: {exc}",
                              retryable=False) from exc
        shapes = [tuple(int(d) for d in s) for s in interp.input_shapes]
        if len(shapes) != 1:
            raise RunnerError(f"model has {len(shapes)} inputs; one image input expected",
                              retryable=False)
        x = make_input(shapes[0])  # NHWC, the same deterministic zero-free input as native
        try:
            y = interp.predict([x])  # also proves the graph runs before timing
            for _ in range(warmup):
                interp.predict([x])
            samples = []
            for _ in range(runs):
                t0 = time.perf_counter_ns()
                interp.predict([x])
                samples.append((time.perf_counter_ns() - t0) / 1e6)
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
                "timer": "time.perf_counter_ns around LiteInterpreter.predict "
                         "(input copy, invoke, output copy)",
            },
        )

    def command(self, path: Path, threads: int, warmup: int) -> list[str]:
        """One ``lce_benchmark_model`` call timing a single run after ``warmup`` runs."""
        return [
            self.binary, f"--graph={path}", f"--num_threads={threads}",
            f"--warmup_runs={warmup}", "--warmup_min_secs=0",  # exactly `warmup` runs
            "--num_runs=1", "--min_secs=0",  # exactly one timed run
            f"--use_xnnpack={'true' if self.use_xnnpack else 'false'}",
        ]

    def _benchmark_binary(self, path: Path, threads: int, warmup: int,
                          runs: int) -> RunOutput:
        cmd = self.command(path, threads, warmup)
        samples: list[float] = []
        init_us: list[float] = []
        first_us: list[float] = []
        last_output = ""
        for _ in range(runs):
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True,
                                      timeout=self.timeout_s, check=False)
            except subprocess.TimeoutExpired as exc:
                raise RunnerError(f"lce_benchmark_model ran over {self.timeout_s:g} s") from exc
            except OSError as exc:
                raise RunnerError(f"cannot run {self.binary}: {exc}") from exc
            last_output = proc.stdout + proc.stderr
            try:
                parsed = parse_benchmark_model(last_output)
            except BenchmarkOutputError as exc:
                raise RunnerError(f"lce_benchmark_model exit {proc.returncode}: {exc}",
                                  retryable=proc.returncode == 0) from exc
            if proc.returncode != 0:
                raise RunnerError(f"lce_benchmark_model exit {proc.returncode}")
            samples.append(parsed.inference_avg_ms)
            if parsed.init_us is not None:
                init_us.append(parsed.init_us)
            if parsed.first_inference_us is not None:
                first_us.append(parsed.first_inference_us)
        return RunOutput(
            samples_ms=samples,
            runtime_version=self.version(),
            extra={
                "mode": "binary",
                "command": cmd,
                "use_xnnpack": self.use_xnnpack,
                "timer": "lce_benchmark_model, one process per sample (warm-up runs, then "
                         "one timed run); its 'Inference (avg)'",
                "init_ms_median": float(np.median(init_us)) / 1e3 if init_us else None,
                "first_inference_ms_median": (float(np.median(first_us)) / 1e3
                                              if first_us else None),
                "last_tool_output": parse_benchmark_model(last_output).to_dict(),
            },
        )

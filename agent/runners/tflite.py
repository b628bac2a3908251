"""Runner for plain FP32 ``.tflite`` models with tflite-runtime (the FP32 baseline library).

Each sample is ``time.perf_counter_ns`` around ``Interpreter.invoke()`` only; the input is set
once before (it does not change between runs). tflite-runtime applies its default delegate
(XNNPACK) to float models; ``BNNBENCH_TFLITE_USE_XNNPACK=0`` runs the built-in kernels
instead. Models with custom ops (LCE's) are refused: they need the ``lce`` runner.
"""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path

import numpy as np

from agent.runners.base import RunnerError, RunOutput, check_run_args
from agent.runners.native import INPUT_SEED, make_input


class TFLiteRunner:
    name = "tflite"

    def __init__(self, use_xnnpack: bool | None = None) -> None:
        env = os.environ.get("BNNBENCH_TFLITE_USE_XNNPACK", "1").strip().lower()
        self.use_xnnpack = env not in ("0", "false", "no", "off") if use_xnnpack is None \
            else use_xnnpack
        self.unavailable_reason: str | None = None

    def available(self) -> bool:
        if importlib.util.find_spec("tflite_runtime") is None:
            self.unavailable_reason = "tflite-runtime is not installed"
            return False
        self.unavailable_reason = None
        return True

    def version(self) -> str:
        from importlib import metadata

        try:
            return f"tflite-runtime {metadata.version('tflite-runtime')}"
        except metadata.PackageNotFoundError:
            return "tflite-runtime unknown"

    def benchmark(self, artifact_path: Path, threads: int, warmup: int, runs: int) -> RunOutput:
        check_run_args(threads, warmup, runs)
        if not self.available():
            raise RunnerError(f"tflite runner not available: {self.unavailable_reason}")
        from tflite_runtime.interpreter import Interpreter, OpResolverType

        resolver = (OpResolverType.AUTO if self.use_xnnpack
                    else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        try:
            interp = Interpreter(model_path=str(artifact_path), num_threads=threads,
                                 experimental_op_resolver_type=resolver)
            interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            hint = (" (a Larq Compute Engine model: run it with the 'lce' runner)"
                    if "custom op" in str(exc).lower() else "")
            raise RunnerError(f"tflite-runtime cannot load the model{hint}: "
                              f"{str(exc).strip().splitlines()[0] if str(exc).strip() else exc}",
                              retryable=False) from exc
        inputs = interp.get_input_details()
        if len(inputs) != 1 or inputs[0]["dtype"] != np.float32:
            raise RunnerError("expected one float32 input (an FP32 model)", retryable=False)
        shape = tuple(int(d) for d in inputs[0]["shape"])
        x = make_input(shape)
        interp.set_tensor(inputs[0]["index"], x)
        out = interp.get_output_details()[0]
        try:
            interp.invoke()
            y = np.array(interp.get_tensor(out["index"]))
            for _ in range(warmup):
                interp.invoke()
            samples = []
            for _ in range(runs):
                t0 = time.perf_counter_ns()
                interp.invoke()
                samples.append((time.perf_counter_ns() - t0) / 1e6)
        except (ValueError, RuntimeError) as exc:
            raise RunnerError(f"tflite-runtime failed: {exc}") from exc
        return RunOutput(
            samples_ms=samples,
            runtime_version=self.version(),
            extra={
                "input_shape": list(shape),
                "input_seed": INPUT_SEED,
                "output_shape": list(y.shape),
                "output_finite": bool(np.isfinite(y).all()),
                "default_delegates": "XNNPACK (tflite-runtime default)" if self.use_xnnpack
                else "none",
                "timer": "time.perf_counter_ns around Interpreter.invoke()",
            },
        )

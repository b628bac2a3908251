"""Time a FP32 ``.tflite`` model with tflite-runtime: the one definition, used in-process by
the local ``tflite`` runner and pushed as a script to a board that has Python and
tflite-runtime (``python3 tflite_bench.py MODEL --threads 4 ... --json``).

Standalone on purpose: only the standard library, numpy and tflite_runtime, so it runs on a
board where bnnbench is not installed. Each sample is ``time.perf_counter_ns`` around
``Interpreter.invoke()`` only; the input is set once before (it does not change between
runs). Warm-up and timed runs follow the static CLI's rules (``--warmup-ms``,
``--min-time-ms``, ``--max-runs``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import numpy as np

INPUT_SEED = 20240601


class BenchError(Exception):
    """The model cannot be timed; ``retryable=False`` when it would fail anywhere."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


def make_input(shape: tuple[int, ...], seed: int = INPUT_SEED) -> np.ndarray:
    """Deterministic input without exact zeros: sign(0) differs between engines, and a
    zero-free input keeps the same work on every library."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    x[np.abs(x) < 1e-3] = 1e-3
    return x


def bench(
    model: str,
    threads: int,
    warmup: int,
    runs: int,
    *,
    warmup_ms: float = 0.0,
    min_time_ms: float = 0.0,
    max_runs: int | None = None,
    use_xnnpack: bool = True,
) -> dict[str, Any]:
    try:
        from tflite_runtime.interpreter import Interpreter, OpResolverType
    except ImportError as exc:
        raise BenchError(f"tflite-runtime is not installed here ({exc})") from None

    resolver = (
        OpResolverType.AUTO if use_xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    try:
        interp = Interpreter(
            model_path=model, num_threads=threads, experimental_op_resolver_type=resolver
        )
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        text = str(exc).strip()
        hint = (
            " (a Larq Compute Engine model: run it with the 'lce' runner)"
            if "custom op" in text.lower()
            else ""
        )
        first = text.splitlines()[0] if text else repr(exc)
        raise BenchError(
            f"tflite-runtime cannot load the model{hint}: {first}", retryable=False
        ) from exc
    inputs = interp.get_input_details()
    if len(inputs) != 1 or inputs[0]["dtype"] != np.float32:
        raise BenchError("expected one float32 input (an FP32 model)", retryable=False)
    shape = tuple(int(d) for d in inputs[0]["shape"])
    interp.set_tensor(inputs[0]["index"], make_input(shape))
    out = interp.get_output_details()[0]

    def timed() -> float:
        t0 = time.perf_counter_ns()
        interp.invoke()
        return (time.perf_counter_ns() - t0) / 1e6

    try:
        interp.invoke()
        y = np.array(interp.get_tensor(out["index"]))
        start, done = time.monotonic(), 0
        while done < warmup or (time.monotonic() - start) * 1000 < warmup_ms:
            interp.invoke()
            done += 1
        warmup_wall_ms = (time.monotonic() - start) * 1000
        cap = max(max_runs or (100 * runs if min_time_ms else runs), runs)
        samples = [timed() for _ in range(runs)]
        while sum(samples) < min_time_ms and len(samples) < cap:
            samples.append(timed())
    except (ValueError, RuntimeError) as exc:
        raise BenchError(f"tflite-runtime failed: {exc}") from exc
    return {
        "samples_ms": samples,
        "warmup_runs": done,
        "warmup_ms": warmup_wall_ms,
        "input_shape": list(shape),
        "input_seed": INPUT_SEED,
        "output_shape": list(y.shape),
        "output_finite": bool(np.isfinite(y).all()),
        "default_delegates": "XNNPACK (tflite-runtime default)" if use_xnnpack else "none",
        "timer": "time.perf_counter_ns around Interpreter.invoke()",
        "tflite_runtime": _version(),
    }


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("tflite-runtime")
    except metadata.PackageNotFoundError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--warmup-ms", type=float, default=0.0)
    ap.add_argument("--min-time-ms", type=float, default=0.0)
    ap.add_argument("--max-runs", type=int, default=None)
    ap.add_argument("--no-xnnpack", action="store_true")
    a = ap.parse_args(argv)
    try:
        report = bench(
            a.model,
            a.threads,
            a.warmup,
            a.runs,
            warmup_ms=a.warmup_ms,
            min_time_ms=a.min_time_ms,
            max_runs=a.max_runs,
            use_xnnpack=not a.no_xnnpack,
        )
    except BenchError as exc:
        print(json.dumps({"error": str(exc), "retryable": exc.retryable}))
        return 1
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

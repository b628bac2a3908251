"""Runner for bnnbench's own engine, in-process through its ctypes binding.

Timing happens inside the C library (monotonic clock around each inference), so Python
overhead is not part of the samples.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from agent.runners.base import RunnerError, RunOutput

INPUT_SEED = 20240601
MAX_THREADS = 16  # BNN_MAX_THREADS in native/include/bnn.h


def make_input(shape: tuple[int, ...], seed: int = INPUT_SEED) -> np.ndarray:
    """Deterministic input without exact zeros: sign(0) differs between engines (FORMAT.md),
    and a zero-free input keeps the same work on every library."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    x[np.abs(x) < 1e-3] = 1e-3
    return x


class NativeRunner:
    name = "native"

    def __init__(self) -> None:
        self.unavailable_reason: str | None = None

    def version(self) -> str:
        from native import engine  # deferred: loading may build libbnn.so

        return engine.version()

    def available(self) -> bool:
        try:
            self.version()
        except Exception as exc:  # any failure to build/load means "not here"
            self.unavailable_reason = f"{type(exc).__name__}: {exc}"
            return False
        self.unavailable_reason = None
        return True

    def benchmark(self, artifact_path: Path, threads: int, warmup: int, runs: int) -> RunOutput:
        from native import engine

        if not 1 <= threads <= MAX_THREADS:
            raise RunnerError(
                f"the native engine runs 1-{MAX_THREADS} threads, the job asks for {threads}",
                retryable=False,
            )
        try:
            eng = engine.NativeEngine(str(artifact_path), threads=threads)
        except engine.NativeError as exc:
            # the artifact's hash was verified: the engine rejects this model for good
            msg = f"native engine cannot load the model: {exc}"
            raise RunnerError(msg, retryable=False) from exc
        try:
            with eng:
                x = make_input(tuple(eng.input_shape))
                y = eng.run(x)  # also validates the graph end-to-end before timing
                samples = [float(s) for s in eng.benchmark(x, warmup=warmup, runs=runs)]
                output_shape = list(eng.output_shape)
        except engine.NativeError as exc:
            raise RunnerError(f"native engine: {exc}") from exc
        if len(samples) != runs:
            raise RunnerError(f"native engine returned {len(samples)} samples, expected {runs}")
        return RunOutput(
            samples_ms=samples,
            runtime_version=engine.version(),
            extra={
                "input_shape": list(x.shape),
                "input_seed": INPUT_SEED,
                "output_shape": output_shape,
                "output_finite": bool(np.isfinite(y).all()),
                "kernel_isa": engine.kernel_isa(),
                "timer": "engine monotonic clock, inference only",
            },
        )

"""Runner for bnnbench's own engine, in-process through its ctypes binding.

Timing happens inside the C library (monotonic clock around each inference), so Python
overhead is not part of the samples.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from agent.runners.base import RunnerError, RunOutput, RunPlan

# the input every library is timed on; defined in the standalone script a board may run
from agent.runners.tflite_bench import INPUT_SEED, make_input
from bnnbench.schemas import MAX_THREADS


def check_threads(threads: int) -> None:
    """The engine's thread range (BNN_MAX_THREADS), in-process and on a device alike; a job
    outside it would fail anywhere, so the failure is not retryable."""
    if not 1 <= threads <= MAX_THREADS:
        raise RunnerError(
            f"the native engine runs 1-{MAX_THREADS} threads, the job asks for {threads}",
            retryable=False,
        )


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

    def benchmark(self, artifact_path: Path, plan: RunPlan) -> RunOutput:
        from native import engine

        check_threads(plan.threads)
        try:
            eng = engine.NativeEngine(str(artifact_path), threads=plan.threads)
        except engine.NativeError as exc:
            # the artifact's hash was verified: the engine rejects this model for good
            msg = f"native engine cannot load the model: {exc}"
            raise RunnerError(msg, retryable=False) from exc
        try:
            with eng:
                x = make_input(tuple(eng.input_shape))
                y = eng.run(x)  # also validates the graph end-to-end before timing
                samples = _timed(eng, x, plan)
                output_shape = list(eng.output_shape)
        except engine.NativeError as exc:
            raise RunnerError(f"native engine: {exc}") from exc
        if len(samples) < plan.runs:
            raise RunnerError(
                f"native engine returned {len(samples)} samples, expected {plan.runs}"
            )
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
                # warm-up and minimum time as the static CLI applies them; not pinned
                "protocol_applied": plan.protocol.model_dump(exclude={"affinity", "cooldown_s"}),
                "affinity_cpus": None,
            },
        )


def _timed(eng: object, x: np.ndarray, plan: RunPlan) -> list[float]:
    """Warm-up until ``warmup`` runs and ``warmup_ms`` of wall time are done; then timed runs
    until ``runs`` samples summing to ``min_time_ms`` exist, capped at ``max_runs`` (the
    rules of the static CLI's --warmup-ms / --min-time-ms / --max-runs)."""
    bench = eng.benchmark  # type: ignore[attr-defined]
    warmup, runs, p = plan.warmup, plan.runs, plan.protocol
    start = time.monotonic()
    if warmup:
        bench(x, warmup=warmup - 1, runs=1)
    while (time.monotonic() - start) * 1000 < p.warmup_ms:
        bench(x, warmup=0, runs=1)
    samples = [float(s) for s in bench(x, warmup=0, runs=runs)]
    cap = plan.run_cap
    while sum(samples) < p.min_time_ms and len(samples) < cap:
        samples += [float(s) for s in bench(x, warmup=0, runs=min(runs, cap - len(samples)))]
    return samples

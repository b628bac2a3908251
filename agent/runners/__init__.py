"""Runner registry: library name (schemas.Library) → runner factory.

To add a library, implement the Runner protocol (runners/base.py) in its own module and add a
factory here; the agent advertises it wherever ``available()`` is true.
"""

from __future__ import annotations

from collections.abc import Callable

from agent.runners.base import Runner, RunnerError, RunOutput, RunPlan
from agent.runners.dabnn import DabnnRunner
from agent.runners.lce import LceRunner
from agent.runners.native import NativeRunner
from agent.runners.tflite import TFLiteRunner
from bnnbench.settings import RunnerSettings

RUNNERS: dict[str, Callable[[RunnerSettings], Runner]] = {
    # in-process (`bnnbench run`); the agent runs the CLI in a child process instead
    # (DeviceCliRunner in place, agent.daemon): a hang is killed, a crash is reported
    "native": lambda _: NativeRunner(),
    # in-process LCE interpreter, or lce_benchmark_model on ARM boards
    "lce": lambda tuning: LceRunner(settings=tuning),
    "tflite": lambda tuning: TFLiteRunner(settings=tuning),  # tflite-runtime, FP32 models
    # benchmark_single_model from $BNNBENCH_DABNN_BENCHMARK or PATH
    "dabnn": lambda tuning: DabnnRunner(settings=tuning),
}


def get_runner(library: str, settings: RunnerSettings | None = None) -> Runner:
    """The runner of ``library``; ``settings`` default to the environment's."""
    try:
        factory = RUNNERS[library]
    except KeyError:
        raise RunnerError(
            f"unknown library {library!r}; known: {', '.join(sorted(RUNNERS))}"
        ) from None
    return factory(settings or RunnerSettings())


def available_runners(
    settings: RunnerSettings | None = None, *, exclude: frozenset[str] = frozenset()
) -> dict[str, Runner]:
    """Runners usable on this machine, keyed by library (but those in ``exclude``)."""
    tuning = settings or RunnerSettings()
    out: dict[str, Runner] = {}
    for name, factory in RUNNERS.items():
        if name in exclude:
            continue
        runner = factory(tuning)
        if runner.available():
            out[name] = runner
    return out


__all__ = [
    "RUNNERS",
    "Runner",
    "RunnerError",
    "RunOutput",
    "RunPlan",
    "available_runners",
    "get_runner",
]

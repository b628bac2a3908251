"""Runner registry: library name (schemas.Library) → runner factory.

To add a library, implement the Runner protocol (runners/base.py) in its own module and add a
factory here; the agent advertises it wherever ``available()`` is true.
"""

from __future__ import annotations

from collections.abc import Callable

from agent.runners.base import Runner, RunnerError, RunOutput
from agent.runners.dabnn import DabnnRunner
from agent.runners.lce import LceRunner
from agent.runners.native import NativeRunner
from agent.runners.tflite import TFLiteRunner

RUNNERS: dict[str, Callable[[], Runner]] = {
    "native": NativeRunner,
    "lce": LceRunner,  # in-process LCE interpreter, or lce_benchmark_model on ARM boards
    "tflite": TFLiteRunner,  # tflite-runtime, FP32 models
    "dabnn": DabnnRunner,  # benchmark_single_model from $BNNBENCH_DABNN_BENCHMARK or PATH
}


def get_runner(library: str) -> Runner:
    try:
        return RUNNERS[library]()
    except KeyError:
        raise RunnerError(
            f"unknown runtime {library!r}; known: {', '.join(sorted(RUNNERS))}"
        ) from None


def available_runners() -> dict[str, Runner]:
    """Runners usable on this machine, keyed by library."""
    out: dict[str, Runner] = {}
    for name, factory in RUNNERS.items():
        runner = factory()
        if runner.available():
            out[name] = runner
    return out


__all__ = ["RUNNERS", "Runner", "RunnerError", "RunOutput", "available_runners", "get_runner"]

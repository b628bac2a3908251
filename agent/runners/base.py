"""The Runner protocol: how the agent runs one library's artifact and times it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from bnnbench.schemas import MeasurementProtocol


class RunnerError(Exception):
    """The runner could not produce timings (bad artifact, crash, unsupported thread count).

    ``retryable=False`` tells the coordinator the failure will recur wherever this runtime
    version runs (e.g. it rejects the model), so the job fails now instead of being requeued.
    """

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


def check_run_args(threads: int, warmup: int, runs: int) -> None:
    """The job's numbers every runner needs: threads >= 1, warmup >= 0, runs >= 1 (a runner
    with a narrower thread range checks that itself). Not retryable: the job is wrong."""
    if threads < 1:
        raise RunnerError(f"threads must be ≥ 1, the job asks for {threads}", retryable=False)
    if runs < 1 or warmup < 0:
        raise RunnerError(f"invalid warmup={warmup} runs={runs}", retryable=False)


@dataclass
class RunOutput:
    samples_ms: list[float]  # one per timed run, milliseconds per inference
    runtime_version: str
    extra: dict[str, Any] = field(default_factory=dict)  # runner-specific provenance


@runtime_checkable
class Runner(Protocol):
    name: str  # the schemas.Library value it serves

    def version(self) -> str:
        """Runtime version recorded with every result (e.g. engine build, LCE release)."""
        ...

    def available(self) -> bool:
        """Whether this runner can run here now; the agent advertises only available ones."""
        ...

    def benchmark(
        self,
        artifact_path: Path,
        threads: int,
        warmup: int,
        runs: int,
        protocol: MeasurementProtocol | None = None,
    ) -> RunOutput:
        """Load the artifact, run ``warmup`` untimed and ``runs`` timed inferences.

        ``protocol`` (the job's warm-up time, minimum timed time, run cap, affinity): a runner
        applies what its tool supports and says in ``extra["protocol_applied"]`` what it did;
        ``extra["affinity_cpus"]`` names the cores it pinned to (None: not pinned)."""
        ...

"""The Runner protocol: how the agent runs one library's artifact and times it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from bnnbench.schemas import JobLease, MeasurementProtocol


class RunnerError(Exception):
    """The runner could not produce timings (bad artifact, crash, unsupported thread count).

    ``retryable=False`` tells the coordinator the failure will recur wherever this runtime
    version runs (e.g. it rejects the model), so the job fails now instead of being requeued.
    """

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class RunPlan:
    """One benchmark run as its job asks for it: ``threads``, ``warmup`` untimed and ``runs``
    timed inferences, and the measurement protocol (warm-up time, minimum timed time, run
    cap, affinity). The numbers are checked once, here (a runner with a narrower thread range
    checks that itself); a wrong one is not retryable: the job is wrong."""

    threads: int
    warmup: int
    runs: int
    protocol: MeasurementProtocol = field(default_factory=MeasurementProtocol)

    def __post_init__(self) -> None:
        if self.threads < 1:
            raise RunnerError(
                f"threads must be ≥ 1, the job asks for {self.threads}", retryable=False
            )
        if self.runs < 1 or self.warmup < 0:
            raise RunnerError(f"invalid warmup={self.warmup} runs={self.runs}", retryable=False)

    @classmethod
    def of(cls, lease: JobLease) -> RunPlan:
        return cls(lease.threads, lease.warmup, lease.runs, lease.protocol)

    @property
    def run_cap(self) -> int:
        """How many timed runs ``min_time_ms`` may grow the job to (``max_runs``, else 100×
        the runs asked for); without a minimum time, exactly ``runs``."""
        p = self.protocol
        return max(p.max_runs or 100 * self.runs, self.runs) if p.min_time_ms else self.runs


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

    def benchmark(self, artifact_path: Path, plan: RunPlan) -> RunOutput:
        """Load the artifact, run ``plan.warmup`` untimed and ``plan.runs`` timed inferences.

        A runner applies what its tool supports of ``plan.protocol`` and says in
        ``extra["protocol_applied"]`` what it did; ``extra["affinity_cpus"]`` names the cores
        it pinned to (None: not pinned)."""
        ...

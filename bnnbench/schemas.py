"""Wire schemas shared by the coordinator and the agent (the REST contract, ``/api/v1``),
and the wire constants both sides read: endpoint paths, the download's hash header, the
thread limit.

Only pydantic here: the agent imports this module and must stay light.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

API_PREFIX = "/api/v1"

# the sha256 of an artifact's bytes, sent with its download so the receiver can check them
SHA256_HEADER = "X-Content-SHA256"

# threads one job may ask for: the native engine's BNN_MAX_THREADS (native/include/bnn.h);
# the coordinator refuses more, the CLI and the runners check it again
MAX_THREADS = 16


class Endpoint:
    """Paths below API_PREFIX: the coordinator's routers declare them, the client fills them
    in (``Endpoint.JOB_RESULT.format(job_id=3)``)."""

    HEALTH = "/health"
    MODELS = "/models"
    MODEL = "/models/{model_id}"
    MODEL_ARTIFACTS = "/models/{model_id}/artifacts"
    ARTIFACTS = "/artifacts"
    ARTIFACT = "/artifacts/{artifact_id}"
    ARTIFACT_RETRY = "/artifacts/{artifact_id}/retry"
    ARTIFACT_DOWNLOAD = "/artifacts/{artifact_id}/download"
    JOBS = "/jobs"
    JOB = "/jobs/{job_id}"
    JOB_RESULT = "/jobs/{job_id}/result"
    JOB_FAILURE = "/jobs/{job_id}/fail"
    JOB_CANCEL = "/jobs/{job_id}/cancel"
    JOB_RETRY = "/jobs/{job_id}/retry"
    JOB_RERUN = "/jobs/{job_id}/rerun"
    AGENT_REGISTER = "/agents/register"
    AGENT_HEARTBEAT = "/agents/heartbeat"
    AGENT_LEASE = "/agents/lease"
    DEVICES = "/devices"
    DEVICE = "/devices/{device_id}"
    RESULTS = "/results"
    RESULTS_TABLE = "/results/table"
    RESULTS_TABLE_CSV = "/results/table.csv"
    RESULTS_TABLE_MD = "/results/table.md"  # Markdown
    RESULTS_TABLE_TEX = "/results/table.tex"  # LaTeX (booktabs, the paper's layout)
    RESULTS_PLOT = "/results/plots/{kind}.{fmt}"  # kind: coordinator.plots.KINDS; png | svg
    RESULTS_COMPARE = "/results/compare"  # ?a=SELECTOR&b=SELECTOR (bnnbench.compare)


class Library(StrEnum):
    """Inference library an artifact is converted for and run with."""

    native = "native"
    lce = "lce"
    tflite = "tflite"
    dabnn = "dabnn"


class ArtifactStatus(StrEnum):
    pending = "pending"
    converting = "converting"
    ready = "ready"
    failed = "failed"


class JobStatus(StrEnum):
    waiting = "waiting"  # artifact not ready yet
    queued = "queued"
    leased = "leased"
    done = "done"
    failed = "failed"
    cancelled = "cancelled"  # by an operator; never leased again (retry queues it anew)


# ------------------------------------------------------------------ devices / agents


class CpuCluster(BaseModel):
    """Cores sharing one frequency policy (a big.LITTLE cluster)."""

    cpus: list[int]
    max_freq_khz: int | None = None
    core: str | None = None  # e.g. "Cortex-A77" from /proc/cpuinfo "CPU part"


class DeviceInfo(BaseModel):
    """What an agent reports about a device it benchmarks (probed through its transport)."""

    hostname: str
    arch: str  # uname -m: x86_64, aarch64, armv7l (the emulated target's under a wrapper)
    os: str  # e.g. "Linux 6.1.0 (Debian 12)", "Android 13 (Linux 4.19.157)"
    cpu_model: str
    cores: int
    isa_flags: list[str] = Field(default_factory=list)  # avx2, avx512_vpopcntdq, neon, ...
    transport: str = "local"  # local | ssh | adb
    # stable identity: android:<ro.serialno>, board:<cpuinfo serial>, machine-id:<id>, ...
    identity: str = ""
    identity_source: str = "hostname"  # which reading gave the identity
    name: str | None = None  # the operator's name for it (devices.toml / devices add)
    soc: str | None = None  # SM8250, BCM2711, Apple M1, ...
    board: str | None = None  # ro.product.model / device-tree model / hw.model
    abi: str | None = None  # arm64-v8a, armeabi-v7a, x86_64, arm64
    ram_mb: int | None = None
    clusters: list[CpuCluster] = Field(default_factory=list)  # fastest first
    governor: str | None = None
    tools: dict[str, str] = Field(default_factory=dict)  # taskset, python3, ... -> path
    emulated: bool = False  # runs through an exec wrapper (qemu): correctness only, no timings
    exec_wrapper: str | None = None

    def fingerprint(self) -> str:
        """Stable identity of a benchmark target (same board ⇒ same fingerprint). The
        hostname enters only when the device offers no stable id at all."""
        if not self.identity:
            return f"{self.hostname}|{self.arch}|{self.cpu_model}|{self.cores}|{self.transport}"
        fp = f"{self.identity}|{self.abi or self.arch}"
        if self.exec_wrapper:
            fp += f"|emulated:{self.exec_wrapper.rsplit('/', 1)[-1]}"
        return fp

    def label(self) -> str:
        """A readable row name: the operator's name, else the probed SoC or board."""
        fallback = self.cpu_model if self.identity else self.hostname
        return self.name or self.soc or self.board or fallback


class RegisterRequest(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    device: DeviceInfo
    runtimes: dict[str, str] = Field(default_factory=dict)  # library -> runtime version


class RegisterResponse(BaseModel):
    agent_id: int
    device_id: int
    token: str  # per-agent bearer token, shown once


class HeartbeatRequest(BaseModel):
    job_id: int | None = None  # job in progress, extends its lease


class HeartbeatResponse(BaseModel):
    ok: bool = True
    lease_extended_until: datetime | None = None


# ------------------------------------------------------------------ models / artifacts


class ModelOut(BaseModel):
    id: int
    name: str
    sha256: str
    size: int
    arch: str | None = None  # ResNet18 / ResNet34 / VGG-Small / user name
    algorithm: str | None = None  # fp32 / bnn / react
    analysis: dict[str, Any] | None = None
    analysis_status: str | None = None  # pending / running / done / failed
    analysis_error: str | None = None
    created_at: datetime


class ArtifactOut(BaseModel):
    id: int
    model_id: int
    library: Library
    status: ArtifactStatus
    sha256: str | None = None
    size: int | None = None
    error: str | None = None
    report: dict[str, Any] | None = None  # converter summary / fidelity report
    created_at: datetime


# ------------------------------------------------------------------ jobs / results


class MeasurementProtocol(BaseModel):
    """How a job is timed on its device, stored with the job and sent with its lease.

    Warm-up lasts ``warmup`` runs and at least ``warmup_ms``; timed runs are at least
    ``runs`` and last at least ``min_time_ms``, capped at ``max_runs``. ``cooldown_s`` is
    waited before the job on its device; ``affinity`` pins the run: ``big`` (the fastest
    cluster, the default on phones), ``all`` (no pinning), or a CPU list such as ``4-7``.
    """

    warmup_ms: float = Field(default=0.0, ge=0, le=600_000)
    min_time_ms: float = Field(default=0.0, ge=0, le=3_600_000)
    max_runs: int | None = Field(default=None, ge=1, le=100_000)
    cooldown_s: float = Field(default=0.0, ge=0, le=3600)
    affinity: str | None = Field(default=None, pattern=r"^(big|all|[0-9]+([-,][0-9]+)*)$")


class JobCreate(BaseModel):
    model_id: int
    library: Library = Library.native
    threads: list[int] = Field(default=[1], min_length=1)
    device_id: int | None = None  # None: any agent may take it
    # device selectors (id, name, "all", or "key=value[,key=value]" on probed attributes such
    # as soc, abi, arch, transport, board); one job per matching device and thread count
    devices: list[str] | None = None
    warmup: int = Field(default=3, ge=0, le=1000)
    runs: int = Field(default=10, ge=1, le=10000)
    protocol: MeasurementProtocol = Field(default_factory=MeasurementProtocol)


class JobOut(BaseModel):
    id: int
    model_id: int
    artifact_id: int
    library: Library
    threads: int
    device_id: int | None
    status: JobStatus
    attempts: int  # failed attempts so far (expired leases + reported failures)
    error: str | None = None
    created_at: datetime
    warmup: int | None = None
    runs: int | None = None
    leased_by: int | None = None  # agent id while leased
    lease_expires_at: datetime | None = None
    protocol: MeasurementProtocol | None = None
    remeasures: int = 0  # times an invalid result sent it back to the queue


class ArtifactRef(BaseModel):
    id: int
    sha256: str
    size: int
    library: Library
    download_url: str  # relative to the coordinator URL


class JobLease(BaseModel):
    job_id: int
    lease_id: str
    lease_expires_at: datetime
    artifact: ArtifactRef
    threads: int
    warmup: int
    runs: int
    protocol: MeasurementProtocol = Field(default_factory=MeasurementProtocol)


class Stats(BaseModel):
    n: int
    mean_ms: float
    median_ms: float
    min_ms: float
    max_ms: float
    stdev_ms: float
    p90_ms: float
    # bnnbench.stats: cv = stdev/mean; a distribution-free (order-statistic) confidence
    # interval of the median and its exact coverage (95 % from 6 samples on, less below);
    # None in results stored before they existed
    cv: float | None = None
    ci_low_ms: float | None = None
    ci_high_ms: float | None = None
    ci_level: float | None = None


class ResultIn(BaseModel):
    lease_id: str
    samples_ms: list[float] = Field(min_length=1)
    runtime_version: str
    env: dict[str, Any] = Field(default_factory=dict)  # governor, affinity, load, temps ...


class JobFailure(BaseModel):
    lease_id: str
    error: str = Field(max_length=10000)
    # False: the failure will recur (e.g. the runtime rejects the model): fail the job now
    # instead of requeueing it until max_attempts
    retryable: bool = True


class ResultOut(BaseModel):
    id: int
    job_id: int
    stats: Stats
    samples_ms: list[float]
    runtime_version: str
    device_fingerprint: str
    artifact_sha256: str
    threads: int
    env: dict[str, Any]
    valid: bool
    verdict: str
    created_at: datetime
    device_id: int | None = None
    emulated: bool = False  # measured through an exec wrapper: never in tables or OM


class DeviceOut(BaseModel):
    id: int
    fingerprint: str
    label: str  # the operator's name, else the probed SoC/board
    name: str | None = None
    hostname: str
    arch: str
    os: str
    cpu_model: str
    cores: int
    transport: str
    emulated: bool = False
    attributes: dict[str, Any] = Field(default_factory=dict)  # the probed DeviceInfo
    agents: list[str] = Field(default_factory=list)
    last_seen: datetime | None = None
    online: bool = False  # an agent of it was seen within a few heartbeats
    busy: bool = False  # a job of it is leased now


class ErrorOut(BaseModel):
    detail: str

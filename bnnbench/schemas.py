"""Wire schemas shared by the coordinator and the agent (the REST contract, ``/api/v1``).

Only pydantic here: the agent imports this module and must stay light.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

API_PREFIX = "/api/v1"


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


# ------------------------------------------------------------------ devices / agents


class DeviceInfo(BaseModel):
    """What an agent reports about the machine it benchmarks on."""

    hostname: str
    arch: str  # uname -m: x86_64, aarch64, armv7l
    os: str  # e.g. "Linux 6.1.0 (Debian 12)"
    cpu_model: str
    cores: int
    isa_flags: list[str] = Field(default_factory=list)  # avx2, avx512_vpopcntdq, neon, ...
    transport: str = "local"  # local | ssh | adb

    def fingerprint(self) -> str:
        """Stable identity of a benchmark target (same board ⇒ same fingerprint)."""
        return f"{self.hostname}|{self.arch}|{self.cpu_model}|{self.cores}|{self.transport}"


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


class JobCreate(BaseModel):
    model_id: int
    library: Library = Library.native
    threads: list[int] = Field(default=[1], min_length=1)
    device_id: int | None = None  # None: any agent may take it
    warmup: int = Field(default=3, ge=0, le=1000)
    runs: int = Field(default=10, ge=1, le=10000)


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


class Stats(BaseModel):
    n: int
    mean_ms: float
    median_ms: float
    min_ms: float
    max_ms: float
    stdev_ms: float
    p90_ms: float


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


class ErrorOut(BaseModel):
    detail: str

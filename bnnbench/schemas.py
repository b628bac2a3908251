"""Wire schemas shared by the coordinator and the agent (the REST contract, ``/api/v1``),
and the wire constants both sides read: endpoint paths, the download's hash header, the
thread limit.

Only pydantic here: the agent imports this module and must stay light.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, Field, field_validator, model_validator

API_PREFIX = "/api/v1"

# the sha256 of an artifact's bytes, sent with its download so the receiver can check them
SHA256_HEADER = "X-Content-SHA256"

# threads one job may ask for: the native engine's BNN_MAX_THREADS (native/include/bnn.h);
# the coordinator refuses more, the CLI and the runners check it again
MAX_THREADS = 16

# ------------------------------------------------------------------ input bounds
# Bad input gets a 422 naming the field and the limit before it reaches the database, and
# nothing is stored that would break a later read.

# SQLite and PostgreSQL integers are 64-bit: a bigger id or offset made SQLite raise
# OverflowError (a 500); every integer a request carries is bounded to this or tighter
INT64_MAX = 2**63 - 1
MAX_CORES = 4096  # above any board's core count; bounds `cores` and CPU indices
MAX_LIST_LIMIT = 10_000  # rows one listing request may ask for
MAX_SAMPLES = 100_000  # samples in one result (a job's runs are capped far below)
# a latency sample the coordinator accepts, in ms: 1 ns (the native CLI's resolution) to
# about 2.8 hours. Outside it a sample is no measurement, and a stored one broke the tables
# for everyone (a speedup of 1e200 / 1 overflows when OM squares it)
MIN_SAMPLE_MS = 1e-6
MAX_SAMPLE_MS = 1e7
# free-form JSON (a result's env) is stored and served back as is: without bounds one
# request could store a row that breaks every later listing (serialisers recurse, so deep
# nesting fails on the way out) or slows it (a huge object is sent with each result)
MAX_JSON_DEPTH = 32
MAX_FREE_JSON_BYTES = 256 * 1024
# columns of the device table (coordinator/models.py): longer strings are refused by
# PostgreSQL (a 500 there), so the schema refuses them first
FINGERPRINT_MAX = 512

# an id in a path, a query or a body: 0 is merely not found, never out of range
RowId = Annotated[int, Field(ge=0, le=INT64_MAX)]


def _no_nul(value: str) -> str:
    # PostgreSQL text and jsonb cannot hold NUL: refused here rather than failing at INSERT
    if "\x00" in value:
        raise ValueError("must not contain NUL characters (\\x00)")
    return value


def _first_error(exc: ValueError) -> str:
    """``loc: message`` of a nested validation's first errors (a ValueError of its own)."""
    errors = getattr(exc, "errors", None)
    if errors is None:
        return str(exc)
    return "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in errors()[:3])


# a string stored as text: no NUL (its length is bounded where it is used); the bounded
# ones check their length first (a 1 MB string is refused for its length, unscanned)
Str = Annotated[str, AfterValidator(_no_nul)]
ShortStr = Annotated[str, Field(max_length=64), AfterValidator(_no_nul)]  # a key, a flag
LineStr = Annotated[str, Field(max_length=255), AfterValidator(_no_nul)]  # a version
PathStr = Annotated[str, Field(max_length=4096), AfterValidator(_no_nul)]  # a device's file


def check_free_json(value: dict[str, Any]) -> dict[str, Any]:
    """A free-form JSON object within the bounds above: at most MAX_JSON_DEPTH levels,
    MAX_FREE_JSON_BYTES serialized, finite numbers, no NUL in keys or strings. Walked with
    an explicit stack: a deep object must not exhaust the recursion limit here either."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list) and depth > MAX_JSON_DEPTH:
            raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels (the limit)")
        if isinstance(node, dict):
            for k, v in node.items():
                if not isinstance(k, str) or "\x00" in k:
                    raise ValueError(f"keys must be strings without NUL, got {str(k)[:40]!r}")
                stack.append((v, depth + 1))
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
        elif isinstance(node, str):
            _no_nul(node)
        elif isinstance(node, float) and not math.isfinite(node):
            raise ValueError(f"numbers must be finite (no NaN or Infinity), got {node!r}")
        elif node is not None and not isinstance(node, bool | int | float):
            raise ValueError(f"not JSON: a {type(node).__name__}")
    size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())
    if size > MAX_FREE_JSON_BYTES:
        raise ValueError(f"{size} bytes of JSON exceed the limit of {MAX_FREE_JSON_BYTES}")
    return value


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
    ENROLMENT_TOKENS = "/enrolment-tokens"
    ENROLMENT_TOKEN = "/enrolment-tokens/{token_id}"
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

    cpus: list[Annotated[int, Field(ge=0, lt=MAX_CORES)]] = Field(max_length=MAX_CORES)
    max_freq_khz: int | None = Field(default=None, ge=0, le=INT64_MAX)
    core: Str | None = Field(default=None, max_length=255)  # e.g. "Cortex-A77" (CPU part)


class DeviceInfo(BaseModel):
    """What an agent reports about a device it benchmarks (probed through its transport)."""

    # string bounds: the device table's column widths (coordinator/models.py)
    hostname: Str = Field(max_length=255)
    # uname -m: x86_64, aarch64, armv7l (the emulated target's under a wrapper)
    arch: Str = Field(max_length=64)
    os: Str = Field(max_length=255)  # e.g. "Linux 6.1.0 (Debian 12)", "Android 13 (Linux …)"
    cpu_model: Str = Field(max_length=255)
    cores: int = Field(ge=1, le=MAX_CORES)
    # avx2, avx512_vpopcntdq, neon, ...
    isa_flags: list[ShortStr] = Field(default_factory=list, max_length=1024)
    transport: Str = Field(default="local", max_length=32)  # local | ssh | adb
    # stable identity: android:<ro.serialno>, board:<cpuinfo serial>, machine-id:<id>, ...
    identity: Str = Field(default="", max_length=255)
    identity_source: Str = Field(default="hostname", max_length=64)  # the reading it came from
    # the operator's name for it (devices.toml / devices add)
    name: Str | None = Field(default=None, max_length=200)
    soc: Str | None = Field(default=None, max_length=255)  # SM8250, BCM2711, Apple M1, ...
    # ro.product.model / device-tree model / hw.model
    board: Str | None = Field(default=None, max_length=255)
    abi: Str | None = Field(default=None, max_length=64)  # arm64-v8a, armeabi-v7a, x86_64, arm64
    ram_mb: int | None = Field(default=None, ge=0, le=INT64_MAX)
    clusters: list[CpuCluster] = Field(default_factory=list, max_length=MAX_CORES)  # fastest 1st
    governor: Str | None = Field(default=None, max_length=255)
    # taskset, python3, ... -> path
    tools: dict[ShortStr, PathStr] = Field(default_factory=dict, max_length=256)
    emulated: bool = False  # runs through an exec wrapper (qemu): correctness only, no timings
    exec_wrapper: PathStr | None = None

    @model_validator(mode="after")
    def _fingerprint_fits(self) -> DeviceInfo:
        n = len(self.fingerprint())
        if n > FINGERPRINT_MAX:
            raise ValueError(
                f"the device fingerprint would be {n} characters, over the limit of "
                f"{FINGERPRINT_MAX}: shorten identity (or hostname and cpu_model without one)"
            )
        return self

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
    name: Str = Field(min_length=1, max_length=200)
    device: DeviceInfo
    # library -> runtime version
    runtimes: dict[ShortStr, LineStr] = Field(default_factory=dict, max_length=64)
    # admin token only: replace a live agent of this name on this device (a new token; the
    # jobs it leased go back to the queue). Without it such a registration is a 409
    replace: bool = False


class RegisterResponse(BaseModel):
    agent_id: int
    device_id: int
    token: str  # per-agent bearer token, shown once


class HeartbeatRequest(BaseModel):
    job_id: RowId | None = None  # job in progress, extends its lease


class HeartbeatResponse(BaseModel):
    ok: bool = True
    lease_extended_until: datetime | None = None


# a year in seconds, ten times over: the longest an enrolment token may be valid
MAX_TOKEN_LIFETIME_S = 10 * 366 * 24 * 3600


class EnrolmentTokenCreate(BaseModel):
    """A token that may only register agents; ``max_uses`` registrations (None: unlimited),
    valid ``expires_in_seconds`` from now (None: until revoked)."""

    note: Str | None = Field(default=None, max_length=200)
    max_uses: int | None = Field(default=None, ge=1, le=1_000_000)
    expires_in_seconds: float | None = Field(default=None, gt=0, le=MAX_TOKEN_LIFETIME_S)


class EnrolmentTokenOut(BaseModel):
    id: int
    note: str | None = None
    max_uses: int | None = None
    uses: int = 0
    created_at: datetime
    expires_at: datetime | None = None
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None
    usable: bool = True  # not revoked, not expired, uses left


class EnrolmentTokenCreated(EnrolmentTokenOut):
    token: str  # shown once: only its sha256 is stored


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
    affinity: str | None = Field(
        default=None, max_length=1000, pattern=r"^(big|all|[0-9]+([-,][0-9]+)*)$"
    )


class JobCreate(BaseModel):
    model_id: RowId
    library: Library = Library.native
    # each checked against 1..MAX_THREADS and the devices' cores by the queue (one message)
    threads: list[int] = Field(default=[1], min_length=1, max_length=1000)
    device_id: RowId | None = None  # None: any agent may take it
    # device selectors (id, name, "all", or "key=value[,key=value]" on probed attributes such
    # as soc, abi, arch, transport, board); one job per matching device and thread count
    devices: (
        list[Annotated[str, Field(min_length=1, max_length=1000), AfterValidator(_no_nul)]] | None
    ) = Field(default=None, max_length=1000)
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


class _Readings(BaseModel):
    """The parts of a reading (agent.probe.parse_readings) the coordinator interprets (its
    throttling check); anything else in a reading is kept as sent."""

    cur_freq_khz: dict[str, float] | None = None
    temperatures_c: dict[str, float] | None = None
    throttled: str | None = Field(default=None, max_length=64, pattern=r"^0x[0-9a-fA-F]+$")


class _EnvShape(BaseModel):
    """The keys of a result's env the coordinator interprets, with the types it reads them
    as (coordinator.queue.throttling): a wrong shape is a 422 naming the key, not a crash."""

    readings_before: _Readings | None = None
    readings_after: _Readings | None = None
    affinity_cpus: list[Annotated[int, Field(ge=0, lt=MAX_CORES)]] | None = None


class ResultIn(BaseModel):
    lease_id: Str = Field(max_length=64)
    # numbers (strict: true or "1.5" is not a latency); finite and positive: checked by the
    # coordinator (coordinator.queue.submit_result)
    samples_ms: list[Annotated[float, Field(strict=True)]] = Field(
        min_length=1, max_length=MAX_SAMPLES
    )
    runtime_version: Str = Field(max_length=255)
    env: dict[str, Any] = Field(default_factory=dict)  # governor, affinity, load, temps ...

    @field_validator("env")
    @classmethod
    def _bounded_env(cls, env: dict[str, Any]) -> dict[str, Any]:
        check_free_json(env)
        # strict: a temperature sent as a string must not pass as a number; the env itself
        # is stored as sent
        try:
            _EnvShape.model_validate(env, strict=True)
        except ValueError as exc:
            raise ValueError(_first_error(exc)) from None
        return env


class JobFailure(BaseModel):
    lease_id: Str = Field(max_length=64)
    error: Str = Field(max_length=10000)
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

"""ORM tables. Timestamps are stored as naive UTC and read back timezone-aware (SQLite keeps
no zone), so every datetime leaving the API carries ``+00:00``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime; use timezone-aware UTC")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime}


class Model(Base):
    """An uploaded ONNX file, content-addressed: the same bytes are one row."""

    __tablename__ = "models"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    size: Mapped[int] = mapped_column(Integer)
    arch: Mapped[str | None] = mapped_column(String(100))
    algorithm: Mapped[str | None] = mapped_column(String(100))
    # pending -> running -> done | failed; the analysis itself runs in a worker process
    analysis_status: Mapped[str] = mapped_column(String(16), default="pending")
    analysis: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    analysis_error: Mapped[str | None] = mapped_column(Text)
    # the coordinator running the analysis and until when its claim holds (as on Artifact)
    analysis_claimed_by: Mapped[str | None] = mapped_column(String(200))
    analysis_claim_expires_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    artifacts: Mapped[list[Artifact]] = relationship(back_populates="model")


class Artifact(Base):
    """A model converted for one library."""

    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("model_id", "library"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    library: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    sha256: Mapped[str | None] = mapped_column(String(64))
    size: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    report: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # coordinators sharing a database: the one converting it (its instance id,
    # coordinator.context) and until when that claim holds; renewed while its worker runs,
    # taken over by another coordinator once expired. claimed_by stays after the conversion:
    # who converted it
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    claim_expires_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    model: Mapped[Model] = relationship(back_populates="artifacts")


class Device(Base):
    """A benchmark target; identified by DeviceInfo.fingerprint() (never by hostname)."""

    __tablename__ = "devices"

    id: Mapped[int] = mapped_column(primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(512), unique=True)
    hostname: Mapped[str] = mapped_column(String(255))
    arch: Mapped[str] = mapped_column(String(64))
    os: Mapped[str] = mapped_column(String(255))
    cpu_model: Mapped[str] = mapped_column(String(255))
    cores: Mapped[int] = mapped_column(Integer)
    isa_flags: Mapped[list[Any]] = mapped_column(JSON, default=list)
    transport: Mapped[str] = mapped_column(String(32))
    name: Mapped[str | None] = mapped_column(String(200))  # the operator's name for it
    # results of an emulated device (exec wrapper, e.g. qemu) never enter tables or OM
    emulated: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    attributes: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # probed DeviceInfo
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    def label(self) -> str:
        """The operator's name, else the probed SoC/board; a device known only by its
        hostname (no stable id) is labelled by it."""
        a = self.attributes or {}
        fallback = self.cpu_model if a.get("identity") else self.hostname
        return self.name or a.get("soc") or a.get("board") or fallback


class Agent(Base):
    __tablename__ = "agents"
    # one agent per name on a device: two registrations racing (two coordinators) end with
    # one row; the loser's insert fails and it answers 409 (coordinator.agents)
    __table_args__ = (Index("uq_agents_name_device", "name", "device_id", unique=True),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    # sha256 of the bearer token: a leaked database does not leak usable tokens
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"))
    runtimes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(default=utcnow)

    device: Mapped[Device] = relationship()


class EnrolmentToken(Base):
    """A token that may only register agents (``POST /enrolment-tokens``, ``bnnbench tokens
    create``), optionally limited in uses and time: a board holds one instead of the admin
    token. Only its sha256 is stored; revoking keeps the row (who enrolled with what)."""

    __tablename__ = "enrolment_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    note: Mapped[str | None] = mapped_column(String(200))  # the admin's words: "lab Pis"
    max_uses: Mapped[int | None] = mapped_column(Integer)  # None: unlimited
    uses: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column()  # None: never
    last_used_at: Mapped[datetime | None] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()


class Job(Base):
    """One benchmark run: model × library × threads (× optional device)."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_status_id", "status", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    library: Mapped[str] = mapped_column(String(32))
    artifact_id: Mapped[int] = mapped_column(ForeignKey("artifacts.id"), index=True)
    threads: Mapped[int] = mapped_column(Integer)
    device_id: Mapped[int | None] = mapped_column(ForeignKey("devices.id"))
    warmup: Mapped[int] = mapped_column(Integer)
    runs: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="waiting")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    protocol: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # MeasurementProtocol
    # times an invalid (noisy, throttled) result sent the job back with more runs
    remeasures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    lease_id: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None] = mapped_column()
    leased_by: Mapped[int | None] = mapped_column(ForeignKey("agents.id"))
    error: Mapped[str | None] = mapped_column(Text)
    # lease / expiry / failure events, for provenance and the final error message
    history: Mapped[list[Any]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    artifact: Mapped[Artifact] = relationship()
    model: Mapped[Model] = relationship()


class Result(Base):
    """A measurement with its provenance; the statistics are computed by the server."""

    __tablename__ = "results"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id"))
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"))
    stats: Mapped[dict[str, Any]] = mapped_column(JSON)
    median_ms: Mapped[float] = mapped_column(Float)
    samples_ms: Mapped[list[Any]] = mapped_column(JSON)
    runtime_version: Mapped[str] = mapped_column(String(255))
    device_fingerprint: Mapped[str] = mapped_column(String(512))
    artifact_sha256: Mapped[str] = mapped_column(String(64))
    threads: Mapped[int] = mapped_column(Integer)
    env: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    valid: Mapped[bool] = mapped_column(Boolean)
    verdict: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    job: Mapped[Job] = relationship()
    device: Mapped[Device] = relationship()

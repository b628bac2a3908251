"""ORM rows → wire schemas."""

from __future__ import annotations

from bnnbench.schemas import (
    API_PREFIX,
    ArtifactOut,
    ArtifactRef,
    ArtifactStatus,
    Endpoint,
    JobLease,
    JobOut,
    JobStatus,
    Library,
    MeasurementProtocol,
    ModelOut,
    ResultOut,
    Stats,
)
from coordinator.models import Artifact, Job, Model, Result


def model_out(m: Model) -> ModelOut:
    return ModelOut(
        id=m.id,
        name=m.name,
        sha256=m.sha256,
        size=m.size,
        arch=m.arch,
        algorithm=m.algorithm,
        analysis=m.analysis,
        analysis_status=m.analysis_status,
        analysis_error=m.analysis_error,
        created_at=m.created_at,
    )


def artifact_out(a: Artifact) -> ArtifactOut:
    return ArtifactOut(
        id=a.id,
        model_id=a.model_id,
        library=Library(a.library),
        status=ArtifactStatus(a.status),
        sha256=a.sha256,
        size=a.size,
        error=a.error,
        report=a.report,
        created_at=a.created_at,
    )


def job_out(j: Job) -> JobOut:
    return JobOut(
        id=j.id,
        model_id=j.model_id,
        artifact_id=j.artifact_id,
        library=Library(j.library),
        threads=j.threads,
        device_id=j.device_id,
        status=JobStatus(j.status),
        attempts=j.attempts,
        error=j.error,
        created_at=j.created_at,
        warmup=j.warmup,
        runs=j.runs,
        leased_by=j.leased_by,
        lease_expires_at=j.lease_expires_at,
        protocol=MeasurementProtocol(**j.protocol) if j.protocol else None,
        remeasures=j.remeasures or 0,
    )


def download_url(artifact_id: int) -> str:
    return API_PREFIX + Endpoint.ARTIFACT_DOWNLOAD.format(artifact_id=artifact_id)


def job_lease(j: Job) -> JobLease:
    a = j.artifact
    assert j.lease_id and j.lease_expires_at and a.sha256 and a.size is not None
    return JobLease(
        job_id=j.id,
        lease_id=j.lease_id,
        lease_expires_at=j.lease_expires_at,
        artifact=ArtifactRef(
            id=a.id,
            sha256=a.sha256,
            size=a.size,
            library=Library(a.library),
            download_url=download_url(a.id),
        ),
        threads=j.threads,
        warmup=j.warmup,
        runs=j.runs,
        protocol=MeasurementProtocol(**(j.protocol or {})),
    )


def result_out(r: Result) -> ResultOut:
    return ResultOut(
        id=r.id,
        job_id=r.job_id,
        stats=Stats(**r.stats),
        samples_ms=r.samples_ms,
        runtime_version=r.runtime_version,
        device_fingerprint=r.device_fingerprint,
        artifact_sha256=r.artifact_sha256,
        threads=r.threads,
        env=r.env,
        valid=r.valid,
        verdict=r.verdict,
        created_at=r.created_at,
        device_id=r.device_id,
        emulated=bool(r.device.emulated) if r.device is not None else False,
    )

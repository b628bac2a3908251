"""ORM rows → wire schemas."""

from __future__ import annotations

from bnnbench.schemas import (
    API_PREFIX,
    ArtifactOut,
    ArtifactRef,
    Endpoint,
    JobLease,
    JobOut,
    Library,
    MeasurementProtocol,
    ModelOut,
    ResultOut,
)
from coordinator.models import Artifact, Job, Model, Result


def model_out(m: Model) -> ModelOut:
    return ModelOut.model_validate(m, from_attributes=True)


def artifact_out(a: Artifact) -> ArtifactOut:
    return ArtifactOut.model_validate(a, from_attributes=True)


def job_out(j: Job) -> JobOut:
    # the stored protocol is a dict, validated into MeasurementProtocol like any other field
    return JobOut.model_validate(j, from_attributes=True)


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
    # the stored stats are a dict, validated into Stats like any other field
    out = ResultOut.model_validate(r, from_attributes=True)
    out.emulated = bool(r.device.emulated) if r.device is not None else False
    return out

"""Artifacts: status and download."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse

from bnnbench.schemas import SHA256_HEADER, ArtifactOut, ArtifactStatus, Endpoint, RowId
from coordinator.agents import check_download
from coordinator.api.deps import admin, admin_or_agent, get_ctx
from coordinator.auth import Principal
from coordinator.conversion import hold_leased_jobs, reconvert_corrupt
from coordinator.errors import Conflict, NotFound
from coordinator.models import Artifact
from coordinator.rows import get_row, listing
from coordinator.views import artifact_out

router = APIRouter(tags=["artifacts"])

_SUFFIX = {"native": ".bnn", "lce": ".tflite", "tflite": ".tflite", "dabnn": ".dab"}


@router.get(Endpoint.ARTIFACTS, response_model=list[ArtifactOut], dependencies=[Depends(admin)])
def list_artifacts(
    request: Request, status: ArtifactStatus | None = None, model_id: RowId | None = None
) -> list[ArtifactOut]:
    q = listing(Artifact, status=status, model_id=model_id)
    with get_ctx(request).db.session() as s:
        return [artifact_out(a) for a in s.scalars(q)]


@router.get(Endpoint.ARTIFACT, response_model=ArtifactOut, dependencies=[Depends(admin)])
def get_artifact(artifact_id: RowId, request: Request) -> ArtifactOut:
    with get_ctx(request).db.session() as s:
        return artifact_out(get_row(s, Artifact, artifact_id))


@router.post(
    Endpoint.ARTIFACT_RETRY,
    response_model=ArtifactOut,
    dependencies=[Depends(admin)],
    responses={409: {"description": "the artifact has not failed"}},
)
def retry_artifact(artifact_id: RowId, request: Request) -> ArtifactOut:
    """Convert a failed artifact again (e.g. after a converter upgrade). Jobs that already
    failed stay failed; submit new ones."""
    ctx = get_ctx(request)
    with ctx.db.session() as s:
        a = get_row(s, Artifact, artifact_id)
        if a.status != ArtifactStatus.failed:
            raise Conflict(f"artifact {artifact_id} is {a.status}, not failed: nothing to retry")
        a.status, a.error, a.report = ArtifactStatus.pending, None, None
        out = artifact_out(a)
    ctx.work_signal.notify()
    return out


@router.get(
    Endpoint.ARTIFACT_DOWNLOAD,
    response_class=FileResponse,
    responses={
        200: {
            "content": {"application/octet-stream": {}},
            "description": f"the artifact's bytes; header {SHA256_HEADER}",
        },
        403: {"description": "an agent that leases no job of this artifact"},
        409: {
            "description": "the artifact is not ready, or its stored blob turned out corrupt "
            "(it is being converted again; an agent's leased jobs of it wait for it)"
        },
    },
)
def download_artifact(
    artifact_id: RowId, request: Request, p: Principal = Depends(admin_or_agent)
) -> FileResponse:
    """The admin downloads any artifact; an agent only the artifact of a job it leases.

    The blob is re-hashed before it is served (not again while its size, times and inode stay
    the same: coordinator.store). Bytes that no longer match send the artifact back to
    conversion and answer 409, like any artifact that is not ready: the state changed, the
    server recovered, and a 5xx would make clients retry the download as if the server were
    down. An agent asking for an artifact that is not ready gets its jobs of it put back to
    waiting, no attempt counted: they are queued again once it is converted."""
    ctx = get_ctx(request)
    with ctx.db.session() as s:
        a = get_row(s, Artifact, artifact_id)
        check_download(s, p, artifact_id)
        sha, library, status = a.sha256, a.library, a.status
        ready = status == ArtifactStatus.ready and bool(sha)
        converting = status in (ArtifactStatus.pending, ArtifactStatus.converting)
        if converting and p.agent_id is not None:
            hold_leased_jobs(s, artifact_id, p.agent_id, f"artifact is {status}, not ready")
    if not ready or not sha:
        raise Conflict(f"artifact {artifact_id} is not ready (status {status})")
    path = ctx.store.path(sha)
    try:
        corrupt = ctx.store.verify(sha)
    except FileNotFoundError:
        raise NotFound(f"artifact {artifact_id}: blob {sha} is missing from the store") from None
    if corrupt is not None:
        ctx.store.quarantine(sha)
        why = f"{corrupt} (changed on disk after it was stored; moved to quarantine/)"
        reconvert_corrupt(ctx.db, sha, why)
        if p.agent_id is not None:
            with ctx.db.session() as s:
                hold_leased_jobs(s, artifact_id, p.agent_id, f"re-converting: {why}")
        ctx.work_signal.notify()
        raise Conflict(
            f"artifact {artifact_id} is not served: {why}; it is being converted again from "
            "its model and its jobs wait for it"
        )
    return FileResponse(
        path,
        media_type="application/octet-stream",
        filename=f"artifact-{artifact_id}{_SUFFIX.get(library, '')}",
        headers={SHA256_HEADER: sha},
    )

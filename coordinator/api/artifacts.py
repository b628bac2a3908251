"""Artifacts: status and download."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse

from bnnbench.schemas import SHA256_HEADER, ArtifactOut, ArtifactStatus, Endpoint, RowId
from coordinator.agents import check_download
from coordinator.api.deps import admin, admin_or_agent, get_ctx
from coordinator.auth import Principal
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
    },
)
def download_artifact(
    artifact_id: RowId, request: Request, p: Principal = Depends(admin_or_agent)
) -> FileResponse:
    """The admin downloads any artifact; an agent only the artifact of a job it leases."""
    ctx = get_ctx(request)
    with ctx.db.session() as s:
        a = get_row(s, Artifact, artifact_id)
        check_download(s, p, artifact_id)
        if a.status != ArtifactStatus.ready or not a.sha256:
            raise Conflict(f"artifact {artifact_id} is not ready (status {a.status})")
        sha, library = a.sha256, a.library
    path = ctx.store.path(sha)
    if not path.is_file():
        raise NotFound(f"artifact {artifact_id}: blob {sha} is missing from the store")
    return FileResponse(
        path,
        media_type="application/octet-stream",
        filename=f"artifact-{artifact_id}{_SUFFIX.get(library, '')}",
        headers={SHA256_HEADER: sha},
    )

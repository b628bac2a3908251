"""Artifacts: status and download."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse
from sqlalchemy import select

from bnnbench.schemas import ArtifactOut, ArtifactStatus
from coordinator.api.deps import admin, admin_or_agent, get_ctx
from coordinator.errors import Conflict, NotFound
from coordinator.models import Artifact
from coordinator.views import artifact_out

router = APIRouter(tags=["artifacts"])

_SUFFIX = {"native": ".bnn", "lce": ".tflite", "tflite": ".tflite", "dabnn": ".dab"}


@router.get("/artifacts", response_model=list[ArtifactOut], dependencies=[Depends(admin)])
def list_artifacts(
    request: Request, status: ArtifactStatus | None = None, model_id: int | None = None
) -> list[ArtifactOut]:
    q = select(Artifact).order_by(Artifact.id)
    if status is not None:
        q = q.where(Artifact.status == status)
    if model_id is not None:
        q = q.where(Artifact.model_id == model_id)
    with get_ctx(request).db.session() as s:
        return [artifact_out(a) for a in s.scalars(q)]


@router.get("/artifacts/{artifact_id}", response_model=ArtifactOut,
            dependencies=[Depends(admin)])
def get_artifact(artifact_id: int, request: Request) -> ArtifactOut:
    with get_ctx(request).db.session() as s:
        a = s.get(Artifact, artifact_id)
        if a is None:
            raise NotFound(f"artifact {artifact_id} not found")
        return artifact_out(a)


@router.post("/artifacts/{artifact_id}/retry", response_model=ArtifactOut,
             dependencies=[Depends(admin)],
             responses={409: {"description": "the artifact has not failed"}})
def retry_artifact(artifact_id: int, request: Request) -> ArtifactOut:
    """Convert a failed artifact again (e.g. after a converter upgrade). Jobs that already
    failed stay failed; submit new ones."""
    ctx = get_ctx(request)
    with ctx.db.session() as s:
        a = s.get(Artifact, artifact_id)
        if a is None:
            raise NotFound(f"artifact {artifact_id} not found")
        if a.status != ArtifactStatus.failed:
            raise Conflict(f"artifact {artifact_id} is {a.status}, not failed: nothing to retry")
        a.status, a.error, a.report = ArtifactStatus.pending, None, None
        out = artifact_out(a)
    ctx.work_signal.notify()
    return out


@router.get(
    "/artifacts/{artifact_id}/download",
    dependencies=[Depends(admin_or_agent)],
    response_class=FileResponse,
    responses={200: {"content": {"application/octet-stream": {}},
                     "description": "the artifact's bytes; header X-Content-SHA256"}},
)
def download_artifact(artifact_id: int, request: Request) -> FileResponse:
    ctx = get_ctx(request)
    with ctx.db.session() as s:
        a = s.get(Artifact, artifact_id)
        if a is None:
            raise NotFound(f"artifact {artifact_id} not found")
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
        headers={"X-Content-SHA256": sha},
    )

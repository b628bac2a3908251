"""Models: upload (multipart, streamed to the blob store) and listing."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from bnnbench.schemas import ArtifactOut, ModelOut
from coordinator import uploads
from coordinator.api.deps import admin, get_ctx
from coordinator.errors import NotFound
from coordinator.models import Artifact, Model
from coordinator.views import artifact_out, model_out

router = APIRouter(tags=["models"], dependencies=[Depends(admin)])

_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary",
                                 "description": "the ONNX model"},
                        "name": {"type": "string"},
                        "arch": {"type": "string", "description": "e.g. ResNet18, VGG-Small"},
                        "algorithm": {"type": "string", "description": "fp32 / bnn / react"},
                    },
                }
            }
        },
    }
}


@router.post(
    "/models",
    response_model=ModelOut,
    status_code=201,
    openapi_extra=_UPLOAD_BODY,
    responses={200: {"description": "the same bytes were uploaded before: the existing model"},
               413: {"description": "larger than max_upload_bytes"},
               422: {"description": "not an ONNX model"}},
)
async def upload_model(request: Request, response: Response) -> ModelOut:
    """Store the file (content-addressed) and create the model row; analysis and conversions
    run later in a worker process. Re-uploading the same bytes returns the existing model."""
    ctx = get_ctx(request)
    up = await uploads.receive_upload(request, ctx.store, ctx.settings)

    out, created = await run_in_threadpool(uploads.store_model, ctx.db, up)
    if created:
        ctx.work_signal.notify()
    else:
        response.status_code = 200
    return out


@router.get("/models", response_model=list[ModelOut])
def list_models(request: Request) -> list[ModelOut]:
    with get_ctx(request).db.session() as s:
        return [model_out(m) for m in s.scalars(select(Model).order_by(Model.id))]


@router.get("/models/{model_id}", response_model=ModelOut)
def get_model(model_id: int, request: Request) -> ModelOut:
    with get_ctx(request).db.session() as s:
        m = s.get(Model, model_id)
        if m is None:
            raise NotFound(f"model {model_id} not found")
        return model_out(m)


@router.get("/models/{model_id}/artifacts", response_model=list[ArtifactOut])
def model_artifacts(model_id: int, request: Request) -> list[ArtifactOut]:
    with get_ctx(request).db.session() as s:
        if s.get(Model, model_id) is None:
            raise NotFound(f"model {model_id} not found")
        q = select(Artifact).where(Artifact.model_id == model_id).order_by(Artifact.id)
        return [artifact_out(a) for a in s.scalars(q)]

"""Models: upload (multipart, streamed to the blob store) and listing."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from bnnbench.schemas import ArtifactOut, Endpoint, ModelOut, RowId
from coordinator import uploads
from coordinator.api.deps import admin, get_ctx
from coordinator.models import Artifact, Model
from coordinator.rows import get_row, listing
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
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "the ONNX model",
                        },
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
    Endpoint.MODELS,
    response_model=ModelOut,
    status_code=201,
    openapi_extra=_UPLOAD_BODY,
    responses={
        200: {"description": "the same bytes were uploaded before: the existing model"},
        413: {"description": "larger than max_upload_bytes"},
        422: {"description": "not an ONNX model"},
    },
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


@router.get(Endpoint.MODELS, response_model=list[ModelOut])
def list_models(request: Request) -> list[ModelOut]:
    with get_ctx(request).db.session() as s:
        return [model_out(m) for m in s.scalars(listing(Model))]


@router.get(Endpoint.MODEL, response_model=ModelOut)
def get_model(model_id: RowId, request: Request) -> ModelOut:
    with get_ctx(request).db.session() as s:
        return model_out(get_row(s, Model, model_id))


@router.get(Endpoint.MODEL_ARTIFACTS, response_model=list[ArtifactOut])
def model_artifacts(model_id: RowId, request: Request) -> list[ArtifactOut]:
    with get_ctx(request).db.session() as s:
        get_row(s, Model, model_id)  # 404 for an unknown model, not an empty list
        return [artifact_out(a) for a in s.scalars(listing(Artifact, model_id=model_id))]

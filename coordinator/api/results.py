"""Results and the hardware-track table."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import PlainTextResponse
from sqlalchemy import select

from bnnbench.schemas import Endpoint, ResultOut
from coordinator import results
from coordinator.api.deps import admin, get_ctx
from coordinator.models import Job, Result
from coordinator.rows import listing
from coordinator.views import result_out

router = APIRouter(tags=["results"], dependencies=[Depends(admin)])


@router.get(Endpoint.RESULTS_TABLE)
def results_table(request: Request) -> dict[str, Any]:
    """Tables 17–20 layout: rows (device, threads, arch), per library FP32 / BNN / ReAct
    median latency in ms, from the latest valid result per (device, library, model, threads);
    ``om``: speedup, compression and OM per (library, algorithm) with the cells averaged;
    ``cells``: the same numbers one per line with provenance."""
    with get_ctx(request).db.session() as s:
        return results.table(s)


@router.get(
    Endpoint.RESULTS_TABLE_CSV,
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/csv": {}}}},
)
def results_table_csv(request: Request) -> PlainTextResponse:
    """The table one cell per line: the reference CSV's columns (device, threads, arch,
    library, algorithm, latency_ms), then provenance."""
    with get_ctx(request).db.session() as s:
        text = results.table_csv(s)
    return PlainTextResponse(
        text,
        media_type="text/csv",
        headers={"Content-Disposition": 'attachment; filename="bnnbench-hardware.csv"'},
    )


@router.get(Endpoint.RESULTS, response_model=list[ResultOut])
def list_results(
    request: Request,
    job_id: int | None = None,
    model_id: int | None = None,
    valid: bool | None = None,
    limit: int = Query(1000, ge=1, le=10000),
    offset: int = Query(0, ge=0),
) -> list[ResultOut]:
    q = listing(Result, job_id=job_id)
    if model_id is not None:
        q = q.where(Result.job_id.in_(select(Job.id).where(Job.model_id == model_id)))
    if valid is not None:
        q = q.where(Result.valid.is_(valid))
    with get_ctx(request).db.session() as s:
        return [result_out(r) for r in s.scalars(q.limit(limit).offset(offset))]

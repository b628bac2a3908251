"""Results and the hardware-track table."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import PlainTextResponse
from sqlalchemy import select

from bnnbench.schemas import INT64_MAX, MAX_LIST_LIMIT, Endpoint, ResultOut, RowId
from coordinator import exports, results
from coordinator.api.deps import admin, get_ctx
from coordinator.models import Job, Result
from coordinator.rows import listing
from coordinator.views import result_out

router = APIRouter(tags=["results"], dependencies=[Depends(admin)])


REFERENCE = Query(
    False,
    description='add the BiBench paper\'s rows (Tables 17-20, labelled "(paper)") and its '
    "Table 3 figures; the OM rows stay this fleet's own",
)


@router.get(Endpoint.RESULTS_TABLE)
def results_table(request: Request, reference: bool = REFERENCE) -> dict[str, Any]:
    """Tables 17–20 layout: rows (device, threads, arch), per library FP32 / BNN / ReAct
    median latency in ms, from the latest valid result per (device, library, model, threads);
    ``om``: speedup, compression and OM per (library, algorithm), per variant and over the
    common set, with the cells averaged and those left out (and why); ``cells``: the same
    numbers one per line with provenance; ``reference``: the paper's (with ``reference``)."""
    with get_ctx(request).db.session() as s:
        return results.table(s, reference)


def _table_file(path: str, fmt: str, name: str, description: str) -> None:
    """GET ``path``: the table as a ``fmt`` file (``exports.render``), an attachment."""

    def table_file(request: Request, reference: bool = REFERENCE) -> PlainTextResponse:
        with get_ctx(request).db.session() as s:
            text = exports.render(results.table(s, reference), fmt)
        filename = f"bnnbench-hardware.{exports.SUFFIXES[fmt]}"
        return PlainTextResponse(
            text,
            media_type=exports.MEDIA_TYPES[fmt],
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )

    router.add_api_route(
        path,
        table_file,
        methods=["GET"],
        name=name,
        description=description,
        response_class=PlainTextResponse,
        responses={200: {"content": {exports.MEDIA_TYPES[fmt]: {}}}},
    )


_table_file(
    Endpoint.RESULTS_TABLE_CSV,
    "csv",
    "results_table_csv",
    "The table one cell per line: the reference CSV's columns (device, threads, arch, "
    "library, algorithm, latency_ms), then provenance and source (measured / paper).",
)
_table_file(
    Endpoint.RESULTS_TABLE_MD,
    "markdown",
    "results_table_markdown",
    "The latency table, OM rows (per variant and common set), the averaging and the cells "
    "left out, as Markdown.",
)
_table_file(
    Endpoint.RESULTS_TABLE_TEX,
    "latex",
    "results_table_latex",
    "LaTeX tabulars (booktabs) in the paper's layout: rows device / threads / arch, a column "
    "group per library with FP32 / BNN / ReAct; then the OM rows, the averaging stated in "
    "comments.",
)


@router.get(Endpoint.RESULTS, response_model=list[ResultOut])
def list_results(
    request: Request,
    job_id: RowId | None = None,
    model_id: RowId | None = None,
    valid: bool | None = None,
    limit: int = Query(1000, ge=1, le=MAX_LIST_LIMIT),
    offset: int = Query(0, ge=0, le=INT64_MAX),
) -> list[ResultOut]:
    q = listing(Result, job_id=job_id)
    if model_id is not None:
        q = q.where(Result.job_id.in_(select(Job.id).where(Job.model_id == model_id)))
    if valid is not None:
        q = q.where(Result.valid.is_(valid))
    with get_ctx(request).db.session() as s:
        return [result_out(r) for r in s.scalars(q.limit(limit).offset(offset))]

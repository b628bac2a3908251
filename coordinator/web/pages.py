"""The dashboard's GET pages; each reads through ``queries`` and renders one template."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from bnnbench.schemas import JobStatus
from coordinator import plots
from coordinator.api.deps import get_ctx
from coordinator.web import queries
from coordinator.web.render import SECURITY_HEADERS, signed_in_page
from coordinator.web.session import viewer

router = APIRouter(include_in_schema=False)


@router.get("/")
def overview(request: Request) -> Response:
    return signed_in_page(request, "overview.html", queries.overview)


@router.get("/devices")
def devices(request: Request) -> Response:
    from coordinator.devices import list_devices

    return signed_in_page(request, "devices.html", lambda s: {"device_rows": list_devices(s)})


@router.get("/devices/{device_id}")
def device(request: Request, device_id: int) -> Response:
    return signed_in_page(request, "device.html", lambda s: queries.device_page(s, device_id))


@router.get("/jobs")
def jobs(request: Request, status: JobStatus | None = None) -> Response:
    return signed_in_page(request, "jobs.html", lambda s: queries.jobs_page(s, status))


@router.get("/jobs/{job_id}")
def job(request: Request, job_id: int) -> Response:
    return signed_in_page(request, "job.html", lambda s: queries.job_page(s, job_id))


@router.get("/models")
def models(request: Request) -> Response:
    return signed_in_page(request, "models.html", queries.models_page)


@router.get("/models/{model_id}")
def model(request: Request, model_id: int) -> Response:
    return signed_in_page(request, "model.html", lambda s: queries.model_page(s, model_id))


@router.get("/results")
def results(request: Request, valid: bool | None = None) -> Response:
    return signed_in_page(request, "results.html", lambda s: queries.results_page(s, valid))


@router.get("/results/{result_id}")
def result(request: Request, result_id: int) -> Response:
    return signed_in_page(request, "result.html", lambda s: queries.result_page(s, result_id))


@router.get("/tables")
def tables(request: Request) -> Response:
    return signed_in_page(
        request,
        "tables.html",
        lambda s: {**queries.tables_page(s), "kinds": plots.KINDS},
    )


@router.get("/charts/{kind}.{fmt}")
def chart(request: Request, kind: str, fmt: str) -> Response:
    """The API's chart (GET /api/v1/results/plots/...) for the signed-in browser's <img>."""
    if viewer(request) is None:
        return Response("sign in first", status_code=401, media_type="text/plain")
    if kind not in plots.KINDS or fmt not in plots.FORMATS:
        return Response("no such chart", status_code=404, media_type="text/plain")
    with get_ctx(request).db.session() as s:
        data = plots.data_from_session(s)
    # an SVG opened on its own is a document: it may style itself, nothing more
    csp = "default-src 'none'; style-src 'unsafe-inline'"
    headers = {**SECURITY_HEADERS, "Content-Security-Policy": csp}
    return Response(plots.render(kind, data, fmt), media_type=plots.FORMATS[fmt], headers=headers)

"""The dashboard's GET pages; each reads through ``queries`` and renders one template."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from bnnbench.schemas import INT64_MAX, JobStatus
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


@router.get("/jobs")
def jobs(request: Request, status: JobStatus | None = None) -> Response:
    return signed_in_page(request, "jobs.html", lambda s: queries.jobs_page(s, status))


@router.get("/models")
def models(request: Request) -> Response:
    return signed_in_page(request, "models.html", queries.models_page)


@router.get("/results")
def results(request: Request, valid: bool | None = None) -> Response:
    return signed_in_page(request, "results.html", lambda s: queries.results_page(s, valid))


def _row_page(name: str, path: str, read: Callable[[Session, int], dict[str, Any]]) -> None:
    """GET ``path`` (one row's page, ``/jobs/{job_id}``): template ``{name}.html`` with what
    ``read`` reads of that row. The route is named ``name``."""
    param = path.rsplit("{", 1)[1].rstrip("}")

    def show(request: Request, row_id: int = Path(alias=param, ge=0, le=INT64_MAX)) -> Response:
        return signed_in_page(request, f"{name}.html", lambda s: read(s, row_id))

    router.add_api_route(path, show, methods=["GET"], name=name)


for _name, _path, _read in [
    ("device", "/devices/{device_id}", queries.device_page),
    ("job", "/jobs/{job_id}", queries.job_page),
    ("model", "/models/{model_id}", queries.model_page),
    ("result", "/results/{result_id}", queries.result_page),
]:
    _row_page(_name, _path, _read)


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

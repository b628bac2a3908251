"""Charts of the results (PNG or SVG), drawn from the data of GET /results/table."""

from __future__ import annotations

from enum import StrEnum

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from bnnbench.schemas import Endpoint
from coordinator import plots
from coordinator.api.deps import admin, get_ctx

router = APIRouter(tags=["results"], dependencies=[Depends(admin)])


class PlotKind(StrEnum):  # plots.KINDS, spelled out for the OpenAPI schema
    latency = "latency"
    speedup = "speedup"
    storage = "storage"
    theoretical = "theoretical"


class PlotFormat(StrEnum):
    png = "png"
    svg = "svg"


assert set(PlotKind) == set(plots.KINDS) and set(PlotFormat) == set(plots.FORMATS)


@router.get(
    Endpoint.RESULTS_PLOT,
    response_class=Response,
    responses={
        200: {
            "content": {media: {} for media in plots.FORMATS.values()},
            "description": "the chart",
        }
    },
)
def results_plot(kind: PlotKind, fmt: PlotFormat, request: Request) -> Response:
    """A chart of the hardware track: ``latency`` (median latency vs threads per device and
    library), ``speedup`` (FP32 / binarized per device: the cells OM averages), ``storage``
    (artifact size per library, arch and algorithm), ``theoretical`` (the model analysis'
    theoretical speedup beside the measured one). Same data, same bytes."""
    with get_ctx(request).db.session() as s:
        data = plots.data_from_session(s)
    body = plots.render(str(kind), data, str(fmt))
    return Response(body, media_type=plots.FORMATS[str(fmt)])

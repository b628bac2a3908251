"""Health, and the Prometheus metrics (coordinator/telemetry.py)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import text

import bnnbench
from bnnbench.schemas import Endpoint
from coordinator.api.deps import get_ctx
from coordinator.telemetry import METRICS_PATH

router = APIRouter(tags=["system"])
# at the top level (/metrics, where Prometheus looks), not under /api/v1: telemetry.install
# includes it
metrics_router = APIRouter(tags=["system"])


@router.get(Endpoint.HEALTH)
def health(request: Request) -> dict[str, Any]:
    """No auth. 200 when the database answers."""
    with get_ctx(request).db.session() as s:
        s.execute(text("SELECT 1"))
    return {"status": "ok", "version": bnnbench.__version__}


@metrics_router.get(
    METRICS_PATH,
    response_class=Response,
    responses={
        200: {
            "content": {"text/plain": {"schema": {"type": "string"}}},
            "description": "Prometheus text exposition (OpenMetrics when the Accept header "
            "asks for it)",
        },
        401: {"description": "metrics_token is set and neither it nor the admin token came"},
    },
)
def metrics(request: Request) -> Response:
    """Queue depth, job outcomes, artifacts and analyses (counted in the database at each
    scrape), request latency per route and conversion time (this process). No auth unless
    the coordinator sets ``metrics_token``: then that token or the admin token."""
    exposition = request.app.state.metrics
    exposition.check(request.headers.get("authorization"))
    body, content_type = exposition.render(request.headers.get("accept"))
    return Response(body, media_type=content_type)

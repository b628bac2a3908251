"""Health."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy import text

import bnnbench
from bnnbench.schemas import Endpoint
from coordinator.api.deps import get_ctx

router = APIRouter(tags=["system"])


@router.get(Endpoint.HEALTH)
def health(request: Request) -> dict[str, Any]:
    """No auth. 200 when the database answers."""
    with get_ctx(request).db.session() as s:
        s.execute(text("SELECT 1"))
    return {"status": "ok", "version": bnnbench.__version__}

"""A minimal server-rendered dashboard at ``/`` (models, artifacts, jobs, the table).

Browsers cannot send a bearer header by themselves: open ``/?token=ADMIN_TOKEN`` once, the
token is kept in an HttpOnly cookie and the address is cleaned.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy import func, select

from bnnbench.client_cli import clusters_text
from coordinator import devices, results
from coordinator.api.deps import get_ctx
from coordinator.auth import ADMIN, authenticate
from coordinator.errors import CoordinatorError
from coordinator.metrics import algorithm_label
from coordinator.models import Agent, Artifact, Device, Job, Model, Result

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
templates.env.filters["algo"] = algorithm_label
templates.env.globals["clusters"] = clusters_text
COOKIE = "bnnbench_token"


@router.get("/", response_class=HTMLResponse)
def dashboard(request: Request, token: str | None = None) -> Response:
    ctx = get_ctx(request)
    if token is not None:
        resp = RedirectResponse("/", status_code=303)
        resp.set_cookie(COOKIE, token, httponly=True, samesite="strict")
        return resp
    header = request.headers.get("authorization")
    cookie = request.cookies.get(COOKIE)
    auth = header or (f"Bearer {cookie}" if cookie else None)
    with ctx.db.session() as s:
        try:
            p = authenticate(s, auth, ctx.settings.admin_token)
            if p.kind != ADMIN:
                raise CoordinatorError("the dashboard needs the admin token")
        except CoordinatorError as exc:
            return templates.TemplateResponse(
                request, "login.html", {"error": exc.detail if auth else None}, status_code=401
            )
        job_counts = Counter(
            dict(s.execute(select(Job.status, func.count()).group_by(Job.status)).all())
        )
        ctx_vars = {
            "models": s.scalars(select(Model).order_by(Model.id.desc()).limit(200)).all(),
            "artifacts": s.scalars(select(Artifact).order_by(Artifact.id.desc()).limit(200)).all(),
            "jobs": s.scalars(select(Job).order_by(Job.id.desc()).limit(200)).all(),
            "job_counts": job_counts,
            "agents": s.scalars(select(Agent).order_by(Agent.id)).all(),
            "devices": {d.id: d for d in s.scalars(select(Device))},
            "device_rows": devices.list_devices(s),
            "recent_results": s.execute(
                select(Result, Job, Model, Device)
                .join(Job, Result.job_id == Job.id)
                .join(Model, Job.model_id == Model.id)
                .join(Device, Result.device_id == Device.id)
                .order_by(Result.id.desc())
                .limit(200)
            ).all(),
            "table": results.table(s),
        }
        return templates.TemplateResponse(request, "dashboard.html", ctx_vars)

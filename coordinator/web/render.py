"""Templates, their filters, and the response every page gets (sign-in form, errors,
security headers)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, Response
from fastapi.templating import Jinja2Templates
from jinja2 import Undefined
from sqlalchemy.orm import Session

from bnnbench.client_cli import clusters_text
from coordinator.api.deps import get_ctx
from coordinator.errors import CoordinatorError
from coordinator.metrics import algorithm_label
from coordinator.web.session import Viewer, viewer

templates = Jinja2Templates(directory=str(Path(__file__).parent.parent / "templates"))

# pages load nothing from elsewhere and run no inline script: a stored XSS in a model name
# or an agent's error text would find no way to run
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _missing(v: Any) -> bool:
    # a field an older analysis or report lacks renders as a dash, not an error
    return v is None or isinstance(v, Undefined)


def _ms(v: float | None, digits: int = 3) -> str:
    return "–" if _missing(v) else f"{v:.{digits}f}"


def _size(n: int | None) -> str:
    if n is None or _missing(n):
        return "–"
    if n < 1024:
        return f"{n} B"
    return f"{n / 1024:.1f} KiB" if n < 1024**2 else f"{n / 1024**2:.1f} MiB"


def _when(t: datetime | None) -> str:
    return "–" if t is None else t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _pretty(v: Any) -> str:
    return json.dumps(v, indent=2, sort_keys=True, default=str)


def _count(v: float | int | None) -> str:
    return "–" if _missing(v) else f"{v:,.0f}"


templates.env.filters.update(
    algo=algorithm_label, ms=_ms, size=_size, when=_when, pretty=_pretty, count=_count
)
templates.env.globals["clusters"] = clusters_text

NAV = [
    ("/", "Overview"),
    ("/devices", "Devices"),
    ("/jobs", "Jobs"),
    ("/models", "Models"),
    ("/results", "Results"),
    ("/tables", "Tables & charts"),
]


def page(
    request: Request,
    template: str,
    context: dict[str, Any],
    who: Viewer | None,
    status_code: int = 200,
) -> HTMLResponse:
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    ctx = {"nav": NAV, "path": request.url.path, "here": here, "viewer": who, **context}
    resp = templates.TemplateResponse(request, template, ctx, status_code=status_code)
    resp.headers.update(SECURITY_HEADERS)
    return resp


def login_page(
    request: Request, error: str | None = None, status_code: int = 401, next_path: str = "/"
) -> HTMLResponse:
    return page(
        request, "login.html", {"error": error, "next": next_path}, None, status_code=status_code
    )


def error_page(request: Request, who: Viewer | None, exc: CoordinatorError) -> HTMLResponse:
    return page(request, "error.html", {"error": exc.detail}, who, status_code=exc.status_code)


def signed_in_page(
    request: Request, template: str, build: Callable[[Session], dict[str, Any]]
) -> Response:
    """``template`` with what ``build`` reads, for a signed-in viewer; the sign-in form (401)
    for anyone else. Rendered inside the session: templates follow ORM relations."""
    who = viewer(request)
    if who is None:
        note = None
        if "token" in request.query_params:  # the old /?token= link: refuse it, say why
            note = "a token in the address is not accepted any more: sign in with this form"
        path = request.url.path
        return login_page(request, note, next_path=path if path != "/login" else "/")
    with get_ctx(request).db.session() as s:
        try:
            data = build(s)
        except CoordinatorError as exc:
            return error_page(request, who, exc)
        return page(request, template, data, who)

"""The dashboard's POST forms: sign in, sign out, and the job actions (cancel, retry, re-run).

Every form answers with a redirect (303) to a page, so a reload never posts twice. Forms post
``application/x-www-form-urlencoded`` bodies, parsed here without python-multipart's form
machinery: the fields are few and short.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from bnnbench.schemas import JobStatus
from coordinator import job_actions
from coordinator.api.deps import get_ctx
from coordinator.errors import CoordinatorError
from coordinator.models import Job
from coordinator.web.render import SECURITY_HEADERS, error_page, login_page
from coordinator.web.session import (
    COOKIE,
    check_form,
    safe_next,
    same_origin,
    sessions,
    token_matches,
    viewer,
)

router = APIRouter(include_in_schema=False)

MAX_FORM_BYTES = 16 * 1024


async def _form(request: Request) -> dict[str, str]:
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return {}
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[0] for k, v in fields.items()}


def _redirect(to: str) -> RedirectResponse:
    resp = RedirectResponse(to, status_code=303)
    resp.headers.update(SECURITY_HEADERS)
    return resp


@router.get("/login")
def login_form(request: Request, next: str = "/") -> Response:
    if viewer(request) is not None:
        return _redirect(safe_next(next))
    return login_page(request, None, status_code=200, next_path=safe_next(next))


@router.post("/login")
async def login(request: Request) -> Response:
    form = await _form(request)
    target = safe_next(form.get("next"))
    if not same_origin(request):
        return login_page(request, "cross-site sign-in refused", 403, target)
    if not token_matches(form.get("token", ""), get_ctx(request).settings.admin_token):
        return login_page(request, "wrong token: that is not the admin token", 401, target)
    resp = _redirect(target)
    resp.set_cookie(
        COOKIE,
        sessions(request).issue(),
        max_age=int(sessions(request).lifetime),
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return resp


@router.post("/logout")
async def logout(request: Request) -> Response:
    form = await _form(request)
    try:
        check_form(request, form.get("csrf"))
    except CoordinatorError as exc:
        return error_page(request, viewer(request), exc)
    sessions(request).revoke(request.cookies.get(COOKIE))
    resp = _redirect("/login")
    resp.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return resp


async def _job_action(
    request: Request, job_id: int, action: Callable[[Session, int], Job]
) -> Response:
    form = await _form(request)
    ctx = get_ctx(request)
    try:
        who = check_form(request, form.get("csrf"))
    except CoordinatorError as exc:
        return error_page(request, viewer(request), exc)

    def apply() -> tuple[int, str]:
        with ctx.db.session() as s:
            job = action(s, job_id)
            return job.id, job.status

    try:
        new_id, status = await run_in_threadpool(apply)  # the database is synchronous
    except CoordinatorError as exc:
        return error_page(request, who, exc)
    if status == JobStatus.queued:
        ctx.jobs_signal.notify()
    return _redirect(safe_next(form.get("next")) if form.get("next") else f"/jobs/{new_id}")


@router.post("/jobs/{job_id}/cancel")
async def cancel(request: Request, job_id: int) -> Response:
    return await _job_action(request, job_id, job_actions.cancel)


@router.post("/jobs/{job_id}/retry")
async def retry(request: Request, job_id: int) -> Response:
    return await _job_action(request, job_id, job_actions.retry)


@router.post("/jobs/{job_id}/rerun")
async def rerun(request: Request, job_id: int) -> Response:
    # no "next": the new job's page shows what was created
    return await _job_action(request, job_id, job_actions.rerun)

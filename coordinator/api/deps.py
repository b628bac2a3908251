"""Shared dependencies: the app context and the caller's identity."""

from __future__ import annotations

from fastapi import Depends, Request
from fastapi.security import HTTPBearer

from coordinator.auth import ADMIN, AGENT, Principal, authenticate, require
from coordinator.context import AppContext

# declared for the OpenAPI "Authorize" button only; the header is parsed by `authenticate`
# so that a missing or malformed token gets our own clear 401 message
_bearer = HTTPBearer(auto_error=False, description="admin token or an agent's token")


def get_ctx(request: Request) -> AppContext:
    return request.app.state.ctx


def principal(request: Request, _: object = Depends(_bearer)) -> Principal:
    ctx = get_ctx(request)
    with ctx.db.session() as s:
        return authenticate(s, request.headers.get("authorization"), ctx.settings.admin_token)


def admin(p: Principal = Depends(principal)) -> Principal:
    return require(p, ADMIN)


def agent(p: Principal = Depends(principal)) -> Principal:
    return require(p, AGENT)


def admin_or_agent(p: Principal = Depends(principal)) -> Principal:
    return require(p, ADMIN, AGENT)

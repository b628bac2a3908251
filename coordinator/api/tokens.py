"""Enrolment tokens (admin token): tokens that may only register agents, for the boards."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from bnnbench.schemas import (
    Endpoint,
    EnrolmentTokenCreate,
    EnrolmentTokenCreated,
    EnrolmentTokenOut,
    RowId,
)
from coordinator import agents
from coordinator.api.deps import admin, get_ctx

router = APIRouter(tags=["enrolment tokens"], dependencies=[Depends(admin)])


@router.post(Endpoint.ENROLMENT_TOKENS, response_model=EnrolmentTokenCreated, status_code=201)
def create_token(body: EnrolmentTokenCreate, request: Request) -> EnrolmentTokenCreated:
    """A new enrolment token: it may only register agents (``POST /agents/register``), at
    most ``max_uses`` times, until ``expires_in_seconds`` from now. The token is shown once;
    only its sha256 is stored."""
    with get_ctx(request).db.session() as s:
        return agents.create_enrolment_token(s, body)


@router.get(Endpoint.ENROLMENT_TOKENS, response_model=list[EnrolmentTokenOut])
def list_tokens(request: Request) -> list[EnrolmentTokenOut]:
    """Every enrolment token with its uses, expiry and whether it can still register."""
    with get_ctx(request).db.session() as s:
        return agents.list_enrolment_tokens(s)


@router.delete(Endpoint.ENROLMENT_TOKEN, response_model=EnrolmentTokenOut)
def revoke_token(token_id: RowId, request: Request) -> EnrolmentTokenOut:
    """Revoke an enrolment token (again: no change). Agents it registered keep working with
    their own tokens."""
    with get_ctx(request).db.session() as s:
        return agents.revoke_enrolment_token(s, token_id)

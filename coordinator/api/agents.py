"""Agents: registration (enrolment or admin token; an agent's own token to register itself
again), heartbeat and long-poll lease (agent token)."""

from __future__ import annotations

import time
from datetime import timedelta

from fastapi import APIRouter, Depends, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from bnnbench.schemas import (
    Endpoint,
    HeartbeatRequest,
    HeartbeatResponse,
    JobLease,
    RegisterRequest,
    RegisterResponse,
)
from coordinator import agents, queue
from coordinator.api.deps import agent, get_ctx, principal
from coordinator.auth import ADMIN, AGENT, ENROL, Principal, bearer_token, hash_token, require
from coordinator.context import AppContext
from coordinator.errors import Unauthorized
from coordinator.models import Agent, utcnow
from coordinator.signals import Signal
from coordinator.views import job_lease

router = APIRouter(tags=["agents"])

# a long poll re-checks the database at least this often (work queued by another process)
_RECHECK_SECONDS = 1.0
_LAST_SEEN_RESOLUTION = timedelta(seconds=5)


@router.post(
    Endpoint.AGENT_REGISTER,
    response_model=RegisterResponse,
    responses={
        403: {"description": "an agent token of another agent, or replace without admin"},
        409: {"description": "a live agent of this name is registered on this device"},
    },
)
def register(
    body: RegisterRequest, request: Request, p: Principal = Depends(principal)
) -> RegisterResponse:
    """Enrol an agent with an enrolment token (or the admin token); the answer holds the
    agent's own token (shown once; only its hash is stored). A name already registered on
    the device needs proof: the agent's own token (a restart: identity, token and leases
    kept) or the admin token with ``replace`` (new token, its leases back to the queue);
    otherwise a live agent of that name answers 409 (coordinator/agents.py)."""
    require(p, ADMIN, ENROL, AGENT)
    ctx = get_ctx(request)
    own = bearer_token(request.headers.get("authorization")) if p.kind == AGENT else None
    out, requeued = agents.register(ctx.db, body, p, own)
    if requeued:
        ctx.jobs_signal.notify()
    return out


@router.post(
    Endpoint.AGENT_HEARTBEAT,
    response_model=HeartbeatResponse,
    responses={409: {"description": "the job is no longer leased by this agent"}},
)
def heartbeat(
    body: HeartbeatRequest, request: Request, p: Principal = Depends(agent)
) -> HeartbeatResponse:
    """Marks the agent alive; with ``job_id``, extends that job's lease by lease_seconds."""
    ctx = get_ctx(request)
    with ctx.db.session() as s:
        a = s.get(Agent, p.agent_id)
        assert a is not None
        until = queue.heartbeat(s, a, body.job_id, ctx.settings)
    return HeartbeatResponse(ok=True, lease_extended_until=until)


def _try_lease(ctx: AppContext, agent_id: int, token_hash: str) -> JobLease | None:
    with ctx.db.session() as s:
        a = s.get(Agent, agent_id)
        assert a is not None
        if a.token_hash != token_hash:  # replaced by the admin while this poll waited
            raise Unauthorized("this agent's token was replaced while it waited for a job")
        now = utcnow()
        if now - a.last_seen > _LAST_SEEN_RESOLUTION:  # not a write per poll per agent
            a.last_seen = now
            s.commit()
        job = queue.lease(s, a, ctx.settings)
        return job_lease(job) if job is not None else None


@router.post(
    Endpoint.AGENT_LEASE,
    response_model=JobLease,
    responses={204: {"description": "no job for this agent within the wait"}},
)
async def lease(
    request: Request,
    wait: float = Query(
        0.0,
        ge=0,
        description="long-poll up to this many seconds (capped by the server's long_poll_seconds)",
    ),
    p: Principal = Depends(agent),
) -> JobLease | Response:
    """The oldest queued job this agent's device (and runtimes) can run, leased for
    lease_seconds; renew with heartbeats. 204 when none arrived within ``wait``."""
    ctx = get_ctx(request)
    assert p.agent_id is not None
    token_hash = hash_token(bearer_token(request.headers.get("authorization")))
    deadline = time.monotonic() + min(wait, ctx.settings.long_poll_seconds)
    while True:
        token = ctx.jobs_signal.token()  # before the query: no missed wake-up
        got = await run_in_threadpool(_try_lease, ctx, p.agent_id, token_hash)
        if got is not None:
            return got
        remaining = deadline - time.monotonic()
        if remaining <= 0 or ctx.should_exit() or await request.is_disconnected():
            return Response(status_code=204)
        await Signal.wait(token, min(remaining, _RECHECK_SECONDS))
        # an agent that went away while we waited must not be handed the job that woke us
        # (it would sit leased until the lease expired and count as a failed attempt)
        if await request.is_disconnected():
            return Response(status_code=204)

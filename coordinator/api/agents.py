"""Agents: registration (enrolment or admin token; an agent's own token to register itself
again), heartbeat and long-poll lease (agent token)."""

from __future__ import annotations

import asyncio
import math
import random
import time
from dataclasses import dataclass, field

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

# A long poll relies on wake-ups (ctx.jobs_signal: a job queued or requeued here, and in other
# coordinators where the signal carries them). It still looks at the database after this long
# without one, jittered (50-100 %) so that waiters do not query together, for work that came
# with no wake-up at all. Re-querying every second cost 56 % of a core for 200 idle agents.
_RECHECK_SECONDS = 5.0
# at most this many lease queries of this process at once: a wake-up of many waiters queues
# here, on the event loop, instead of in the thread pool, the connection pool and SQLite's
# write lock (where they starved results and registrations)
_LEASE_GATE = 4
# a query that found no queued job at all lets the other waiters of the same wake-up skip
# theirs, for at most this long (then one of them looks again)
_EMPTY_TTL_SECONDS = 1.0


@dataclass
class _LeaseWaits:
    """Per-app state of the long polls: the gate, and when the queue was last seen empty."""

    gate: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(_LEASE_GATE))
    empty_token: object = None  # the wake-up token current when the queue was seen empty
    empty_at: float = -math.inf

    def seen_empty(self, token: object) -> bool:
        """No queued job since the last wake-up, seen less than _EMPTY_TTL_SECONDS ago."""
        fresh = time.monotonic() - self.empty_at < _EMPTY_TTL_SECONDS
        return token is self.empty_token and fresh

    def mark_empty(self, token: object, at: float) -> None:
        self.empty_token, self.empty_at = token, at


def _waits(request: Request) -> _LeaseWaits:
    state = request.app.state
    waits = getattr(state, "lease_waits", None)
    if waits is None:
        waits = state.lease_waits = _LeaseWaits()
    return waits


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


def _try_lease(ctx: AppContext, agent_id: int, token_hash: str) -> JobLease | bool:
    """A lease for the agent, else whether no job at all is queued (for any agent)."""
    with ctx.db.session() as s:
        a = s.get(Agent, agent_id)
        assert a is not None
        if a.token_hash != token_hash:  # replaced by the admin while this poll waited
            raise Unauthorized("this agent's token was replaced while it waited for a job")
        now = utcnow()
        if now - a.last_seen > queue.LAST_SEEN_RESOLUTION:  # not a write per poll per agent
            a.last_seen = now
            s.commit()
        job = queue.lease(s, a, ctx.settings)
        if job is not None:
            return job_lease(job)
        return not queue.any_queued(s)


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
    waits = _waits(request)
    while True:
        token = ctx.jobs_signal.token()  # before the query: no missed wake-up
        if not waits.seen_empty(token):
            async with waits.gate:
                # another waiter of this wake-up may have found the queue empty meanwhile
                if not waits.seen_empty(token):
                    began = time.monotonic()
                    got = await run_in_threadpool(_try_lease, ctx, p.agent_id, token_hash)
                    if isinstance(got, JobLease):
                        return got
                    if got:
                        waits.mark_empty(token, began)
        remaining = deadline - time.monotonic()
        if remaining <= 0 or ctx.should_exit() or await request.is_disconnected():
            return Response(status_code=204)
        recheck = _RECHECK_SECONDS * random.uniform(0.5, 1.0)
        await Signal.wait(token, min(remaining, recheck))
        # an agent that went away while we waited must not be handed the job that woke us
        # (it would sit leased until the lease expired and count as a failed attempt)
        if await request.is_disconnected():
            return Response(status_code=204)

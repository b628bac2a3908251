"""Agent registration (who may register which agent) and enrolment tokens.

An agent is a name on a device. Registering a (name, device) that is already registered
needs proof, so that nobody takes over an agent's identity and its lease:

- the agent's **own token**: the same agent again (a restart, new runtimes): identity,
  token and leases are kept;
- the **admin token with** ``replace``: the agent gets a new token and the jobs it leased go
  back to the queue (whoever held the old token can no longer post their results);
- otherwise (an **enrolment token**, or the admin token without ``replace``) only an agent
  that is gone may be taken over (nothing seen of it for ``devices.ONLINE_WITHIN`` and no
  lease running): a live one answers **409**. Two processes started with one name thus get
  one identity and one refusal, never a token ping-pong — also through two coordinators on
  one database: ``agents(name, device_id)`` is unique, the loser's insert fails and its retry
  sees the winner.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bnnbench.schemas import (
    EnrolmentTokenCreate,
    EnrolmentTokenCreated,
    EnrolmentTokenOut,
    JobStatus,
    RegisterRequest,
    RegisterResponse,
)
from coordinator.auth import (
    ADMIN,
    AGENT,
    ENROL,
    Principal,
    enrolment_problem,
    hash_token,
    new_agent_token,
    new_enrolment_token,
)
from coordinator.db import Database
from coordinator.devices import ONLINE_WITHIN
from coordinator.errors import Conflict, Forbidden, NotFound, Unauthorized
from coordinator.models import Agent, Device, EnrolmentToken, Job, utcnow
from coordinator.rows import changed

log = logging.getLogger("bnnbench.coordinator.agents")

# registrations of this process one at a time: the check for a live agent of the same name
# and the insert or token change must not interleave (two agents starting together). The
# device row is also locked (FOR UPDATE) for coordinators sharing a PostgreSQL database.
_REGISTER_LOCK = threading.Lock()
_REGISTER_TRIES = 3


def _device(s: Session, req: RegisterRequest) -> Device:
    info = req.device
    fp = info.fingerprint()
    dev = s.scalar(select(Device).where(Device.fingerprint == fp).with_for_update())
    if dev is None:
        columns = {"hostname", "arch", "os", "cpu_model", "cores", "isa_flags", "transport"}
        dev = Device(fingerprint=fp, **info.model_dump(include=columns))
        s.add(dev)
    # fields outside the fingerprint may change (kernel update, governor, a new name)
    dev.os, dev.isa_flags = info.os, list(info.isa_flags)
    dev.hostname, dev.transport = info.hostname, info.transport
    dev.name = info.name or dev.name
    dev.emulated = info.emulated
    dev.attributes = info.model_dump(mode="json")
    s.flush()  # IntegrityError if registered concurrently: the caller retries
    return dev


def register(
    db: Database, req: RegisterRequest, caller: Principal, caller_token: str | None = None
) -> tuple[RegisterResponse, int]:
    """Register ``req`` for ``caller`` (``caller_token``: the bearer token of an agent
    re-registering itself, answered back unchanged). Returns the answer and the number of
    leased jobs sent back to the queue (an agent replaced)."""
    if caller.kind == ENROL and req.replace:
        raise Forbidden(
            "replace=true needs the admin token: an enrolment token cannot replace a "
            "registered agent"
        )
    with _REGISTER_LOCK:
        for _ in range(_REGISTER_TRIES):
            try:
                with db.session() as s:
                    return _register(s, req, caller, caller_token)
            except IntegrityError:
                # another coordinator committed the device row, or an agent of this name on
                # it (unique (name, device_id)), first: the next round sees it and answers
                # as for any registered agent (409 while it is live)
                log.info("registration of %r raced another one; looking again", req.name)
        raise Conflict(
            f"agent {req.name!r} was registered concurrently {_REGISTER_TRIES} times while "
            "this registration ran; try again"
        )


def _register(
    s: Session, req: RegisterRequest, caller: Principal, caller_token: str | None
) -> tuple[RegisterResponse, int]:
    now = utcnow()
    dev = _device(s, req)
    agent = s.scalar(
        select(Agent)
        .where(Agent.name == req.name, Agent.device_id == dev.id)
        .order_by(Agent.id)
        .limit(1)
    )
    if caller.kind == AGENT:
        return _same_agent(s, req, dev, agent, caller, caller_token, now)
    if agent is None:
        _use_enrolment(s, caller, now)
        token = new_agent_token()
        agent = Agent(
            name=req.name,
            device_id=dev.id,
            token_hash=hash_token(token),
            runtimes=dict(req.runtimes),
            last_seen=now,
        )
        s.add(agent)
        s.flush()
        log.info(
            "agent %d registered: %r on device %d (%s)", agent.id, req.name, dev.id, _by(caller)
        )
        return RegisterResponse(agent_id=agent.id, device_id=dev.id, token=token), 0
    replacing = caller.kind == ADMIN and req.replace
    live = _liveness(s, agent, now)
    if live is not None and not replacing:
        raise Conflict(
            f"an agent named {req.name!r} is already registered on this device (agent "
            f"{agent.id}, device {dev.id}) and is live: {live}. Two agents cannot share a "
            "name on one device: give this one another --name. The same agent restarted "
            "keeps its cache dir and registers with its own token. To replace it, register "
            "with the admin token and replace=true (bnnbench agent --replace), or wait until "
            f"it has been silent for {ONLINE_WITHIN.total_seconds():.0f} s"
        )
    _use_enrolment(s, caller, now)
    why = (
        f"agent {agent.id} was replaced by the admin"
        if replacing
        else f"agent {agent.id} was re-registered ({_by(caller)}) after it went silent"
    )
    dropped = _release_leases(s, agent, why, now)
    token = new_agent_token()
    agent.token_hash = hash_token(token)
    agent.runtimes = dict(req.runtimes)
    agent.last_seen = now
    s.flush()
    log.warning(
        "%s: %r on device %d has a new token; %d leased job(s) back to the queue",
        why,
        req.name,
        dev.id,
        dropped,
    )
    return RegisterResponse(agent_id=agent.id, device_id=dev.id, token=token), dropped


def _same_agent(
    s: Session,
    req: RegisterRequest,
    dev: Device,
    agent: Agent | None,
    caller: Principal,
    caller_token: str | None,
    now: datetime,
) -> tuple[RegisterResponse, int]:
    """An agent token registers its own agent again: identity, token and leases are kept."""
    if agent is None or agent.id != caller.agent_id or caller_token is None:
        own = s.get(Agent, caller.agent_id)
        whose = f"agent {own.id} ({own.name!r} on device {own.device_id})" if own else "an agent"
        raise Forbidden(
            f"this token belongs to {whose}: an agent token re-registers only its own agent, "
            f"not {req.name!r} on device {dev.id}; registering another agent needs an "
            "enrolment token or the admin token"
        )
    if req.replace:
        raise Forbidden("replace=true needs the admin token, not an agent token")
    agent.runtimes = dict(req.runtimes)
    agent.last_seen = now
    s.flush()
    return RegisterResponse(agent_id=agent.id, device_id=dev.id, token=caller_token), 0


def _by(caller: Principal) -> str:
    if caller.kind == ENROL:
        return f"enrolment token {caller.enrolment_id}"
    return "admin token" if caller.kind == ADMIN else caller.kind


def _liveness(s: Session, agent: Agent, now: datetime) -> str | None:
    """Why ``agent`` counts as live (a process still uses its token), or None."""
    age = now - agent.last_seen
    if age < ONLINE_WITHIN:
        return f"last seen {max(age.total_seconds(), 0.0):.0f} s ago"
    held = s.scalar(
        select(func.count())
        .select_from(Job)
        .where(
            Job.status == JobStatus.leased, Job.leased_by == agent.id, Job.lease_expires_at > now
        )
    )
    if held:
        return f"it holds the lease of {held} job(s)"
    return None


def _release_leases(s: Session, agent: Agent, why: str, now: datetime) -> int:
    """Send the jobs ``agent`` leased back to the queue (not a failed attempt: the job did
    nothing wrong); a result posted later with the old lease is refused as stale."""
    jobs = s.scalars(
        select(Job).where(Job.status == JobStatus.leased, Job.leased_by == agent.id)
    ).all()
    n = 0
    for job in jobs:
        count = changed(
            s,
            update(Job)
            .where(Job.id == job.id, Job.status == JobStatus.leased, Job.lease_id == job.lease_id)
            .values(
                status=JobStatus.queued,
                lease_id=None,
                lease_expires_at=None,
                leased_by=None,
                updated_at=now,
            )
            .execution_options(synchronize_session=False),
        )
        if count != 1:
            continue
        s.refresh(job)
        # JSON columns are not mutation-tracked: assign a new list
        event = {"at": now.isoformat(), "event": "lease dropped", "detail": why}
        job.history = [*(job.history or []), event]
        n += 1
    return n


def _use_enrolment(s: Session, caller: Principal, now: datetime) -> None:
    """Count one registration against the caller's enrolment token (compare-and-set: two
    registrations racing for its last use cannot both have it)."""
    if caller.kind != ENROL:
        return
    t = EnrolmentToken
    count = changed(
        s,
        update(t)
        .where(
            t.id == caller.enrolment_id,
            t.revoked_at.is_(None),
            (t.expires_at.is_(None)) | (t.expires_at > now),
            (t.max_uses.is_(None)) | (t.uses < t.max_uses),
        )
        .values(uses=t.uses + 1, last_used_at=now)
        .execution_options(synchronize_session=False),
    )
    if count != 1:
        row = s.get(EnrolmentToken, caller.enrolment_id)
        problem = enrolment_problem(row, now) if row is not None else "was deleted"
        raise Unauthorized(
            f"enrolment token {caller.enrolment_id} {problem or 'cannot be used'}: ask the "
            "admin for a new one (bnnbench tokens create)"
        )


# ------------------------------------------------------------------ enrolment tokens


def token_out(t: EnrolmentToken, now: datetime | None = None) -> EnrolmentTokenOut:
    return EnrolmentTokenOut(
        id=t.id,
        note=t.note,
        max_uses=t.max_uses,
        uses=t.uses,
        created_at=t.created_at,
        expires_at=t.expires_at,
        last_used_at=t.last_used_at,
        revoked_at=t.revoked_at,
        usable=enrolment_problem(t, now) is None,
    )


def create_enrolment_token(s: Session, body: EnrolmentTokenCreate) -> EnrolmentTokenCreated:
    now = utcnow()
    token = new_enrolment_token()
    expires = (
        now + timedelta(seconds=body.expires_in_seconds)
        if body.expires_in_seconds is not None
        else None
    )
    row = EnrolmentToken(
        token_hash=hash_token(token),
        note=body.note,
        max_uses=body.max_uses,
        uses=0,
        created_at=now,
        expires_at=expires,
    )
    s.add(row)
    s.flush()
    log.info("enrolment token %d created (uses %s, expires %s)", row.id, body.max_uses, expires)
    return EnrolmentTokenCreated(**token_out(row, now).model_dump(), token=token)


def list_enrolment_tokens(s: Session) -> list[EnrolmentTokenOut]:
    now = utcnow()
    rows = s.scalars(select(EnrolmentToken).order_by(EnrolmentToken.id)).all()
    return [token_out(t, now) for t in rows]


def revoke_enrolment_token(s: Session, token_id: int) -> EnrolmentTokenOut:
    """Revoke (idempotent); agents it registered keep their own tokens."""
    row = s.get(EnrolmentToken, token_id)
    if row is None:
        raise NotFound(f"enrolment token {token_id} not found")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        s.flush()
        log.info("enrolment token %d revoked", token_id)
    return token_out(row)


# ------------------------------------------------------------------ artifact downloads


def check_download(s: Session, caller: Principal, artifact_id: int) -> None:
    """An agent may download only the artifact of a job it currently leases (the admin any):
    an agent token must not be a key to every model on the coordinator."""
    if caller.kind != AGENT:
        return
    leased = s.scalar(
        select(Job.id)
        .where(
            Job.artifact_id == artifact_id,
            Job.status == JobStatus.leased,
            Job.leased_by == caller.agent_id,
        )
        .limit(1)
    )
    if leased is None:
        raise Forbidden(
            f"agent {caller.agent_id} leases no job of artifact {artifact_id}: an agent token "
            "may download only the artifact of a job it currently leases"
        )

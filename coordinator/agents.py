"""Agent registration and the lease/heartbeat side of the queue that needs no HTTP."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bnnbench.schemas import RegisterRequest, RegisterResponse
from coordinator.auth import hash_token, new_agent_token
from coordinator.db import Database
from coordinator.models import Agent, Device, utcnow


def _device(s: Session, req: RegisterRequest) -> Device:
    info = req.device
    fp = info.fingerprint()
    dev = s.scalar(select(Device).where(Device.fingerprint == fp))
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


def register(db: Database, req: RegisterRequest) -> RegisterResponse:
    """Same name on the same device is the same agent: its token is rotated (an agent that
    lost its token registers again); otherwise a new agent."""
    try:
        with db.session() as s:
            return _register(s, req)
    except IntegrityError:  # the device row was created concurrently: now it exists
        with db.session() as s:
            return _register(s, req)


def _register(s: Session, req: RegisterRequest) -> RegisterResponse:
    dev = _device(s, req)
    token = new_agent_token()
    agent = s.scalar(select(Agent).where(Agent.name == req.name, Agent.device_id == dev.id))
    if agent is None:
        agent = Agent(
            name=req.name,
            device_id=dev.id,
            token_hash=hash_token(token),
            runtimes=dict(req.runtimes),
        )
        s.add(agent)
    else:
        agent.token_hash = hash_token(token)
        agent.runtimes = dict(req.runtimes)
        agent.last_seen = utcnow()
    s.flush()
    return RegisterResponse(agent_id=agent.id, device_id=dev.id, token=token)

"""Bearer-token auth.

Two kinds of caller: the admin/user token from settings (upload, submit, results, agent
enrolment) and per-agent tokens issued at registration (heartbeat, lease, results of their
jobs, artifact download). Agent tokens are random 32 bytes and only their sha256 is stored.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from coordinator.errors import Forbidden, Unauthorized
from coordinator.models import Agent

ADMIN = "admin"
AGENT = "agent"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_agent_token() -> str:
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Principal:
    kind: str  # ADMIN | AGENT
    agent_id: int | None = None


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise Unauthorized("missing bearer token: send the header 'Authorization: Bearer <token>'")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("malformed Authorization header: expected 'Bearer <token>'")
    return token


def authenticate(s: Session, authorization: str | None, admin_token: str) -> Principal:
    token = bearer_token(authorization)
    if hmac.compare_digest(token.encode(), admin_token.encode()):
        return Principal(ADMIN)
    agent_id = s.scalar(select(Agent.id).where(Agent.token_hash == hash_token(token)))
    if agent_id is None:
        raise Unauthorized("invalid token: not the admin token nor a registered agent's token")
    return Principal(AGENT, agent_id)


def require(principal: Principal, *kinds: str) -> Principal:
    if principal.kind in kinds:
        return principal
    if kinds == (ADMIN,):
        raise Forbidden("this endpoint needs the admin token; an agent token cannot use it")
    raise Forbidden("this endpoint needs an agent token (register with POST /agents/register)")

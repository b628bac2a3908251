"""Bearer-token auth.

Three kinds of caller:

- the **admin** token from settings: everything (upload, submit, results, enrolment tokens,
  registering or explicitly replacing agents);
- **enrolment** tokens (``POST /enrolment-tokens``): may only register agents, optionally
  limited in uses and time; what a board holds instead of the admin token;
- **agent** tokens issued at registration: heartbeat, lease, results of their own jobs, the
  artifact of a job they lease, and re-registering their own agent.

Agent and enrolment tokens are random 32 bytes and only their sha256 is stored. The admin
token must be long and no placeholder: the coordinator refuses to start otherwise
(:func:`admin_token_problem`).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from coordinator.errors import Forbidden, Unauthorized
from coordinator.models import Agent, EnrolmentToken, utcnow

ADMIN = "admin"
AGENT = "agent"
ENROL = "enrolment"

MIN_ADMIN_TOKEN_LENGTH = 16
# words that mark a token copied from an example rather than generated (compared without
# case and punctuation: "change-me", "CHANGE_ME", "changeme-please" ...)
_PLACEHOLDER_WORDS = ("changeme", "changethis", "replaceme", "yourtoken", "placeholder")
_KIND_NAMES = {ADMIN: "the admin token", AGENT: "an agent's token", ENROL: "an enrolment token"}


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_agent_token() -> str:
    return secrets.token_urlsafe(32)


def new_enrolment_token() -> str:
    return secrets.token_urlsafe(32)


def admin_token_problem(token: str) -> str | None:
    """Why ``token`` must not be the admin token, or None when it may be."""
    if not token:
        return "no admin token is set"
    normalised = re.sub(r"[^a-z0-9]", "", token.lower())
    if any(word in normalised for word in _PLACEHOLDER_WORDS):
        return f"the admin token {token!r} is a placeholder"
    if len(token) < MIN_ADMIN_TOKEN_LENGTH:
        return (
            f"the admin token is {len(token)} characters long; at least "
            f"{MIN_ADMIN_TOKEN_LENGTH} are needed"
        )
    if len(set(token)) < 4:
        return "the admin token repeats one to three characters: it is guessable"
    if token != token.strip():
        return "the admin token begins or ends with white space"
    return None


class InsecureAdminToken(ValueError):
    """The configured admin token is missing, short or a placeholder."""


def check_admin_token(token: str) -> None:
    """Raise :class:`InsecureAdminToken` with the cause and the fix."""
    problem = admin_token_problem(token)
    if problem is not None:
        raise InsecureAdminToken(
            f"refusing to start: {problem}. Whoever guesses it controls the coordinator. "
            "Set BNNBENCH_ADMIN_TOKEN (or --admin-token-file FILE, BNNBENCH_ADMIN_TOKEN_FILE) "
            f"to a random token of at least {MIN_ADMIN_TOKEN_LENGTH} characters, e.g. "
            "the output of `openssl rand -hex 16`"
        )


@dataclass(frozen=True)
class Principal:
    kind: str  # ADMIN | AGENT | ENROL
    agent_id: int | None = None
    enrolment_id: int | None = None


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise Unauthorized("missing bearer token: send the header 'Authorization: Bearer <token>'")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("malformed Authorization header: expected 'Bearer <token>'")
    return token


def enrolment_problem(t: EnrolmentToken, now: datetime | None = None) -> str | None:
    """Why enrolment token ``t`` cannot register an agent now, or None."""
    now = now or utcnow()
    if t.revoked_at is not None:
        return f"was revoked at {t.revoked_at.isoformat(timespec='seconds')}"
    if t.expires_at is not None and t.expires_at <= now:
        return f"expired at {t.expires_at.isoformat(timespec='seconds')}"
    if t.max_uses is not None and t.uses >= t.max_uses:
        return f"is used up ({t.uses} of {t.max_uses} registrations)"
    return None


def authenticate(s: Session, authorization: str | None, admin_token: str) -> Principal:
    token = bearer_token(authorization)
    if hmac.compare_digest(token.encode(), admin_token.encode()):
        return Principal(ADMIN)
    digest = hash_token(token)
    agent_id = s.scalar(select(Agent.id).where(Agent.token_hash == digest))
    if agent_id is not None:
        return Principal(AGENT, agent_id)
    enrol = s.scalar(select(EnrolmentToken).where(EnrolmentToken.token_hash == digest))
    if enrol is not None:
        problem = enrolment_problem(enrol)
        if problem is not None:
            raise Unauthorized(
                f"enrolment token {enrol.id} {problem}: ask the admin for a new one "
                "(bnnbench tokens create)"
            )
        return Principal(ENROL, enrolment_id=enrol.id)
    raise Unauthorized(
        "invalid token: not the admin token, a registered agent's token nor an enrolment token"
    )


def require(principal: Principal, *kinds: str) -> Principal:
    if principal.kind in kinds:
        return principal
    if kinds == (ADMIN,) and principal.kind == AGENT:
        raise Forbidden("this endpoint needs the admin token; an agent token cannot use it")
    needs = " or ".join(_KIND_NAMES[k] for k in kinds)
    if principal.kind == ENROL:
        raise Forbidden(
            f"this endpoint needs {needs}; an enrolment token can only register agents "
            "(POST /agents/register), after which the agent uses its own token"
        )
    if kinds == (AGENT,):
        raise Forbidden("this endpoint needs an agent token (register with POST /agents/register)")
    raise Forbidden(f"this endpoint needs {needs}")

"""Dashboard sign-in: an HMAC-signed session cookie, a per-session CSRF token, an Origin check.

- ``POST /login`` with the admin token in the form body (never in a URL) sets the cookie
  ``bnnbench_session = <session id>.<expiry>.<signature>``: HttpOnly, SameSite=Strict, Secure
  on https. The signing key is derived from the admin token, so the token itself is never
  stored in the browser, and changing the admin token signs every session out.
- A state-changing form (job actions, logout) carries ``csrf`` = HMAC(key, session id), checked
  in constant time, and a browser's ``Origin`` header, when sent, must name this host: a
  SameSite=Strict cookie already stays home on cross-site posts; the token also covers
  same-site siblings and old browsers.
- ``POST /logout`` clears the cookie and revokes the session id in this process (until its
  expiry; a restart forgets revocations, the expiry still bounds the cookie).

Scripts may still send ``Authorization: Bearer <admin token>`` to read pages.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from fastapi import Request

from coordinator.auth import ADMIN, authenticate
from coordinator.errors import CoordinatorError, Forbidden

COOKIE = "bnnbench_session"
SESSION_SECONDS = 12 * 3600
_KEY_LABEL = b"bnnbench dashboard session v1"


def _key(admin_token: str) -> bytes:
    return hmac.new(admin_token.encode(), _KEY_LABEL, hashlib.sha256).digest()


def _mac(key: bytes, msg: str) -> str:
    digest = hmac.new(key, msg.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def token_matches(given: str, admin_token: str) -> bool:
    return hmac.compare_digest(given.encode(), admin_token.encode())


@dataclass(frozen=True)
class Viewer:
    """Who reads a page: a signed-in browser (``sid`` and its ``csrf`` token) or a script
    with the bearer header (no session, no forms)."""

    sid: str | None = None
    csrf: str | None = None


@dataclass
class Sessions:
    """Issues and checks session cookies; remembers sign-outs until the cookies expire."""

    admin_token: str
    lifetime: float = SESSION_SECONDS
    _revoked: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def key(self) -> bytes:
        return _key(self.admin_token)

    def issue(self, now: float | None = None) -> str:
        sid = secrets.token_urlsafe(18)
        expires = int((time.time() if now is None else now) + self.lifetime)
        payload = f"{sid}.{expires}"
        return f"{payload}.{_mac(self.key, payload)}"

    def check(self, cookie: str | None, now: float | None = None) -> str | None:
        """The session id of a valid, unexpired, not revoked cookie; else None."""
        if not cookie or cookie.count(".") != 2:
            return None
        sid, expires, sig = cookie.split(".")
        if not hmac.compare_digest(sig.encode(), _mac(self.key, f"{sid}.{expires}").encode()):
            return None
        now = time.time() if now is None else now
        if not expires.isdigit() or int(expires) < now:
            return None
        with self._lock:
            if sid in self._revoked:
                return None
        return sid

    def revoke(self, cookie: str | None, now: float | None = None) -> None:
        sid = self.check(cookie, now)
        if sid is None:
            return
        now = time.time() if now is None else now
        with self._lock:
            self._revoked = {s: t for s, t in self._revoked.items() if t > now}  # expired ones
            self._revoked[sid] = now + self.lifetime

    def csrf(self, sid: str) -> str:
        return _mac(self.key, f"csrf:{sid}")


def sessions(request: Request) -> Sessions:
    return request.app.state.web_sessions


def viewer(request: Request) -> Viewer | None:
    """The signed-in viewer, or None (the page then answers with the sign-in form)."""
    ss = sessions(request)
    sid = ss.check(request.cookies.get(COOKIE))
    if sid is not None:
        return Viewer(sid, ss.csrf(sid))
    header = request.headers.get("authorization")
    if header:
        from coordinator.api.deps import get_ctx

        ctx = get_ctx(request)
        with ctx.db.session() as s:
            try:
                if authenticate(s, header, ctx.settings.admin_token).kind == ADMIN:
                    return Viewer()
            except CoordinatorError:
                return None
    return None


def same_origin(request: Request) -> bool:
    """False when a browser says the form came from another site (Origin, else Referer);
    requests without either (scripts, some privacy settings) rely on the CSRF token."""
    source = request.headers.get("origin") or request.headers.get("referer")
    if source == "null":  # an opaque origin: a sandboxed frame, a redirect from elsewhere
        return False
    if not source:
        return True
    # behind a reverse proxy that rewrites Host, the proxy's X-Forwarded-Host names the site
    # (a cross-site form cannot set that header)
    hosts = {request.headers.get("host", ""), request.headers.get("x-forwarded-host", "")}
    return urlsplit(source).netloc in hosts - {""}


def check_form(request: Request, csrf: str | None) -> Viewer:
    """A state-changing form post: a session cookie, its CSRF token, and the same origin."""
    if not same_origin(request):
        raise Forbidden("cross-site form post refused (Origin does not match this host)")
    ss = sessions(request)
    sid = ss.check(request.cookies.get(COOKIE))
    if sid is None:
        raise Forbidden("not signed in (or the session expired): sign in again")
    if not csrf or not hmac.compare_digest(csrf.encode(), ss.csrf(sid).encode()):
        raise Forbidden("missing or wrong CSRF token: reload the page and try again")
    return Viewer(sid, ss.csrf(sid))


def safe_next(target: str | None) -> str:
    """Where to go after a form: a path on this site only (no open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target

"""The HTTP core every caller of the coordinator goes through (the CLI, the agent, scripts):
base URL and API prefix, bearer token, error mapping and retries. httpx only: an agent on a
board imports it.

Retries (``Retry``; the agent's policy, off for the CLI, which should say at once that the
coordinator is not there): connection errors and 502/503/504 (coordinator down, restarting,
behind a proxy) are retried for as long as it takes, with exponential backoff and jitter
capped at ``max_backoff`` — a board on a bad network should wait, not give up. Other 5xx are
retried ``max_server_errors`` times and then surfaced, so a persistent server bug fails the
job instead of hanging the agent. 4xx answers are never retried: the caller knows what they
mean.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any, Self

import httpx

from bnnbench.schemas import API_PREFIX, SHA256_HEADER

log = logging.getLogger("bnnbench.http")

_OUTAGE_STATUSES = frozenset({502, 503, 504})
_CHUNK = 1 << 16


class ApiError(Exception):
    """An error answer from the coordinator (or none at all: ``status_code`` 0 when it could
    not be reached), with the server's ``detail`` message."""

    def __init__(self, status_code: int, detail: str, method: str = "", url: str = "") -> None:
        super().__init__(f"{method} {url} -> HTTP {status_code}: {detail}".strip())
        self.status_code = status_code
        self.detail = detail
        self.method = method
        self.url = url


def error_detail(resp: httpx.Response) -> str:
    """The coordinator's ``{"detail": ...}`` message of an error response, else its text."""
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:500] or resp.reason_phrase
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])
    return str(body)[:500]


class Stopped(Exception):
    """The caller is shutting down (its stop event is set); a retry loop was abandoned."""


class Backoff:
    """Exponential backoff with jitter: the n-th wait is uniform in [0.5, 1] × min(cap,
    base·2ⁿ), so agents that lost the same coordinator do not come back in lockstep."""

    def __init__(self, base: float = 0.25, cap: float = 30.0) -> None:
        self.base, self.cap, self.attempt = base, cap, 0

    def next(self) -> float:
        # exponent bounded: a days-long outage must not overflow the float
        ceiling = min(self.cap, self.base * 2.0 ** min(self.attempt, 40))
        self.attempt += 1
        return random.uniform(ceiling / 2, ceiling)


@dataclass
class Retry:
    """Keep trying through outages; ``stop`` ends the waiting between tries (``Stopped``)."""

    max_backoff: float = 30.0
    max_server_errors: int = 5
    stop: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True)
class Download:
    """What a download wrote: the sha256 and size of the bytes, and the sha256 the server
    announced in its header ("" when it sent none)."""

    sha256: str
    size: int
    announced: str


class HttpCore:
    """One coordinator: ``send`` answers whatever status comes back (after retries), ``call``
    raises ApiError for 4xx/5xx, ``download`` streams a body into a file."""

    def __init__(
        self,
        url: str,
        token: str = "",
        *,
        timeout: float = 60.0,
        retry: Retry | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.token = token  # mutable: an agent that registers again gets a new one
        self.retry = retry
        self._http = httpx.Client(base_url=self.url, timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def api_path(path: str) -> str:
        """``path`` below the API prefix (``/agents/lease``), or already a server path as a
        lease's ``download_url`` is."""
        return path if path.startswith(API_PREFIX) else API_PREFIX + path

    def _headers(self, token: str | None) -> dict[str, str]:
        tok = self.token if token is None else token
        return {"Authorization": f"Bearer {tok}"} if tok else {}

    def send(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        timeout: float | None = None,
        retry: bool = True,
        **kw: Any,
    ) -> httpx.Response:
        """One logical call: the first answer that is not retried, whatever its status.
        ``token`` replaces the client's for this call; ``retry=False`` makes a single try
        even under a retry policy. ``kw`` goes to httpx (json, params, files, data)."""
        url = self.api_path(path)
        headers = self._headers(token)
        to = timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT

        def attempt() -> httpx.Response:
            return self._http.request(method, url, headers=headers, timeout=to, **kw)

        return self._retrying(method, url, attempt, retry)

    def call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """``send``, raising ApiError for an error answer."""
        resp = self.send(method, path, **kw)
        if resp.status_code >= 400:
            raise ApiError(resp.status_code, error_detail(resp), method, self.api_path(path))
        return resp

    def download(self, path: str, dest: IO[bytes]) -> Download:
        """GET ``path`` streaming the body into ``dest`` (hashed on the way); raises ApiError
        for an error answer. A retried download starts the file over."""
        url = self.api_path(path)
        h, size = hashlib.sha256(), 0

        def attempt() -> httpx.Response:
            nonlocal h, size
            dest.seek(0)
            dest.truncate()
            h, size = hashlib.sha256(), 0
            with self._http.stream("GET", url, headers=self._headers(None)) as resp:
                if resp.status_code >= 400:
                    resp.read()  # error_detail needs the body
                    return resp
                for chunk in resp.iter_bytes(_CHUNK):
                    dest.write(chunk)
                    h.update(chunk)
                    size += len(chunk)
            return resp

        resp = self._retrying("GET", url, attempt, True)
        if resp.status_code >= 400:
            raise ApiError(resp.status_code, error_detail(resp), "GET", url)
        return Download(h.hexdigest(), size, resp.headers.get(SHA256_HEADER, ""))

    def _retrying(
        self, method: str, url: str, attempt: Callable[[], httpx.Response], retry: bool
    ) -> httpx.Response:
        policy = self.retry if retry else None
        backoff = Backoff(cap=policy.max_backoff if policy else 0.0)
        server_errors = 0
        while True:
            # no stop check before an attempt: a stopping agent still makes one try (e.g. to
            # deliver a finished result); it only stops waiting between tries
            try:
                resp = attempt()
            except httpx.TransportError as exc:
                if policy is None:
                    # status 0: no HTTP answer at all (refused, timed out, DNS)
                    raise ApiError(
                        0, f"cannot reach the coordinator at {self.url}: {exc}", method, url
                    ) from None
                self._wait(policy, backoff, f"{method} {url}: coordinator unreachable ({exc!r})")
                continue
            if resp.status_code < 500 or policy is None:
                return resp
            if resp.status_code not in _OUTAGE_STATUSES:
                server_errors += 1
                if server_errors > policy.max_server_errors:
                    return resp
            self._wait(policy, backoff, f"{method} {url}: HTTP {resp.status_code}")

    @staticmethod
    def _wait(policy: Retry, backoff: Backoff, reason: str) -> None:
        delay = backoff.next()
        log.warning("%s; retrying in %.1fs", reason, delay)
        if policy.stop.wait(delay):
            raise Stopped(reason)

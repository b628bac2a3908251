"""HTTP access to the coordinator with the retry policy the agent needs on flaky links.

Connection errors and 502/503/504 (coordinator down, restarting, behind a proxy) are retried
for as long as it takes, with exponential backoff and jitter capped at ``max_backoff``: a board
on a bad network should wait, not give up. Other 5xx are retried ``max_server_errors`` times
and then surfaced, so a persistent server bug fails the job instead of hanging the agent.
4xx answers are returned to the caller, which knows what they mean.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from typing import Any

import httpx

from bnnbench.http import ApiError, error_detail
from bnnbench.schemas import API_PREFIX

log = logging.getLogger("bnnbench.agent")

_OUTAGE_STATUSES = {502, 503, 504}


class Stopped(Exception):
    """The agent is shutting down; a retry loop was abandoned."""


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


class CoordinatorApi:
    """Thin wrapper over httpx.Client: base URL, bearer token, retries, stop awareness."""

    def __init__(
        self,
        base_url: str,
        token: str = "",
        *,
        max_backoff: float = 30.0,
        max_server_errors: int = 5,
        stop: threading.Event | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.max_backoff = max_backoff
        self.max_server_errors = max_server_errors
        self.stop = stop or threading.Event()
        self._client = httpx.Client(base_url=self.base_url, timeout=timeout)

    def close(self) -> None:
        self._client.close()

    def url(self, path: str) -> str:
        """``path`` is either API-relative (``/agents/lease``) or server-relative (``/api/...``)."""
        return path if path.startswith(API_PREFIX) else API_PREFIX + path

    def _headers(self, token: str | None) -> dict[str, str]:
        tok = self.token if token is None else token
        return {"Authorization": f"Bearer {tok}"} if tok else {}

    def _wait(self, backoff: Backoff, reason: str) -> None:
        delay = backoff.next()
        log.warning("%s; retrying in %.1fs", reason, delay)
        if self.stop.wait(delay):
            raise Stopped(reason)

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        timeout: float | None = None,
        token: str | None = None,
        retry: bool = True,
    ) -> httpx.Response:
        """One logical call; returns the first non-retryable response (2xx/4xx)."""
        backoff = Backoff(cap=self.max_backoff)
        server_errors = 0
        url = self.url(path)
        while True:
            # no stop check before the attempt: a shutting-down agent still makes one try
            # (e.g. to deliver a finished result); it only stops waiting between tries
            try:
                resp = self._client.request(
                    method,
                    url,
                    json=json,
                    params=params,
                    headers=self._headers(token),
                    timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
                )
            except httpx.TransportError as exc:
                if not retry:
                    raise
                self._wait(backoff, f"{method} {url}: coordinator unreachable ({exc!r})")
                continue
            if resp.status_code >= 500 and retry:
                if resp.status_code not in _OUTAGE_STATUSES:
                    server_errors += 1
                    if server_errors > self.max_server_errors:
                        return resp
                self._wait(backoff, f"{method} {url}: HTTP {resp.status_code}")
                continue
            return resp

    def stream_to(
        self, path: str, write: Callable[[bytes], None], *, on_restart: Callable[[], None]
    ) -> httpx.Headers:
        """GET ``path`` streaming the body into ``write``; same retry policy as ``request``.

        A retry restarts the body from the beginning, so ``on_restart`` must discard what was
        written. Raises ApiError for a non-retryable answer."""
        backoff = Backoff(cap=self.max_backoff)
        server_errors = 0
        url = self.url(path)
        while True:
            on_restart()
            try:
                with self._client.stream("GET", url, headers=self._headers(None)) as resp:
                    if resp.status_code >= 500:
                        resp.read()
                        if resp.status_code not in _OUTAGE_STATUSES:
                            server_errors += 1
                            if server_errors > self.max_server_errors:
                                raise ApiError(resp.status_code, error_detail(resp), "GET", url)
                        self._wait(backoff, f"GET {url}: HTTP {resp.status_code}")
                        continue
                    if resp.status_code >= 400:
                        resp.read()
                        raise ApiError(resp.status_code, error_detail(resp), "GET", url)
                    for chunk in resp.iter_bytes(1 << 16):
                        write(chunk)
                    return resp.headers
            except httpx.TransportError as exc:
                self._wait(backoff, f"GET {url}: download interrupted ({exc!r})")

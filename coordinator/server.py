"""The HTTP server under ``bnnbench serve``: uvicorn, with bounds on what one client can hold.

uvicorn on its own waits forever for the rest of a request's headers (its only timer is the
keep-alive one, armed after a response), so clients that open connections and send half a
request pile up until the process runs out of file descriptors — 1,100 of them stopped
``/health`` from answering. Here:

- **header timeout** (``header_timeout_s``): a connection must deliver a request's complete
  headers within this long of opening, or of the previous response on a kept-alive
  connection. Past it the server answers ``408`` if part of a request came, and closes.
- **body timeout** (``body_timeout_s``): once the headers are in, the rest of the body must
  arrive within this long, except for the model upload (``POST /api/v1/models``, up to
  ``max_upload_bytes``), which may take as long as it needs but may not *stall* that long.
  Time the server itself holds the body back (flow control while the app is busy) does not
  count. A request whose body is in is the app's: a long-polling lease is never cut.
- **open files**: the soft ``RLIMIT_NOFILE`` is raised to the hard limit at start (soft
  limits are often 1024, hard ones far higher): every connection is a descriptor.
- **max_connections** (uvicorn's ``limit_concurrency``): past this many open connections, or
  requests in progress, new requests are answered ``503`` at once (agents retry 503 with
  backoff) instead of queueing without end. It counts connections, idle ones included, and
  every agent keeps two (its lease long-poll and its heartbeat): size it at twice the devices
  served plus headroom for users and scripts. It is lowered to fit the open-file limit.
- **backlog**: connections the kernel queues before they are accepted.

The timers are one ``call_at`` per connection, re-armed only when the connection changes
phase (headers → body → app → headers …), so thousands of idle connections cost little.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from typing import Any

import uvicorn

from bnnbench.schemas import API_PREFIX, Endpoint
from bnnbench.settings import CoordinatorSettings

log = logging.getLogger("bnnbench.coordinator.server")

# descriptors kept for the database, blobs, converter pipes and logs, beyond the connections
FD_RESERVE = 256
# routes whose body is a large upload: bounded by inactivity, not by total time
UPLOAD_ROUTES = frozenset({("POST", API_PREFIX + Endpoint.MODELS)})

_TIMEOUT_408 = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 16\r\nconnection: close\r\n\r\nrequest too slow"
)


def raise_open_files_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit; returns (before, after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # an unlimited hard limit cannot be the soft one (the kernel's nr_open caps it)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        log.warning("could not raise the open-files limit from %d to %d: %s", soft, target, exc)
        return soft, soft
    return soft, target


class _Tally:
    """Connections closed for being too slow, logged at most every ``every`` seconds (a
    flood of them must not flood the log)."""

    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self.counts: dict[str, int] = {}
        self._last = 0.0

    def add(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1
        now = time.monotonic()
        if now - self._last >= self.every:
            self._last = now
            summary = ", ".join(f"{n} {w}" for w, n in sorted(self.counts.items()))
            log.warning("closed slow connections: %s (since the last report)", summary)
            self.counts.clear()


class _Deadlines:
    """Mixed into uvicorn's HTTP protocol class (httptools or h11): the header and body
    timeouts. Reads the protocol's ``cycle`` (the current request: ``more_body`` while its
    body arrives, ``response_complete`` once answered), ``flow`` and ``transport``."""

    header_timeout_s: float = 0.0
    body_timeout_s: float = 0.0
    uploads: frozenset[tuple[str, str]] = frozenset()
    tally: _Tally

    # set by the uvicorn protocol this is mixed into
    cycle: Any
    flow: Any
    transport: asyncio.Transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._phase: tuple[str, Any] = ("", None)
        self._since = 0.0
        self._partial = False  # bytes of a request came in the current header phase
        self._track(False)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        super().connection_lost(exc)  # type: ignore[misc]

    def data_received(self, data: bytes) -> None:
        super().data_received(data)  # type: ignore[misc]
        self._track(True)

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        self._track(False)

    # ------------------------------------------------------------------ the phases

    def _current(self) -> tuple[str, Any]:
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            return "headers", cycle  # waiting for (the rest of) a request's headers
        if cycle.more_body:
            return "body", cycle
        return "app", cycle  # the request is in: the app answers in its own time

    def _limit(self, kind: str) -> float:
        if kind == "headers":
            return self.header_timeout_s
        if kind == "body":
            return self.body_timeout_s
        return 0.0

    def _is_upload(self, cycle: Any) -> bool:
        scope = getattr(cycle, "scope", None) or {}
        return (scope.get("method"), scope.get("path")) in self.uploads

    def _track(self, got_data: bool) -> None:
        if self.transport.is_closing():
            self._cancel_timer()
            return
        now = self._loop.time()
        kind, cycle = self._current()
        if kind != self._phase[0] or cycle is not self._phase[1]:
            self._phase = (kind, cycle)
            self._since = now
            self._partial = got_data and kind == "headers"
            self._arm()
        elif got_data:
            if kind == "headers":
                self._partial = True
            elif kind == "body" and self._is_upload(cycle):
                self._since = now  # an upload is bounded by its stalls, not its length

    def _arm(self) -> None:
        self._cancel_timer()
        limit = self._limit(self._phase[0])
        if limit > 0:
            self._timer = self._loop.call_at(self._since + limit, self._expired)

    def _cancel_timer(self) -> None:
        if getattr(self, "_timer", None) is not None:
            assert self._timer is not None
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        kind, cycle = self._current()
        if kind != self._phase[0] or cycle is not self._phase[1]:
            self._track(False)  # moved on without a hook seeing it
            return
        now = self._loop.time()
        if kind == "body" and self.flow.read_paused:
            self._since = now  # the server holds the body back, not the client
        deadline = self._since + self._limit(kind)
        if now < deadline:
            self._timer = self._loop.call_at(deadline, self._expired)
            return
        if kind == "headers" and not self._partial:
            self.tally.add("idle")  # nothing of a request came: just close
        else:
            self.tally.add(f"without their {kind}")
            self.transport.write(_TIMEOUT_408)
        self.transport.close()


def guarded_protocol(
    header_timeout_s: float, body_timeout_s: float, uploads: frozenset[tuple[str, str]]
) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol (httptools where installed, else h11, as ``http="auto"``
    picks) with the header and body timeouts."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as base
    except ImportError:  # no httptools: the pure-Python parser
        from uvicorn.protocols.http.h11_impl import H11Protocol as base  # type: ignore[assignment]
    attrs = {
        "header_timeout_s": header_timeout_s,
        "body_timeout_s": body_timeout_s,
        "uploads": uploads,
        "tally": _Tally(),
    }
    return type(f"Guarded{base.__name__}", (_Deadlines, base), attrs)


def make_config(app: Any, settings: CoordinatorSettings, log_level: str) -> uvicorn.Config:
    """uvicorn's configuration for ``bnnbench serve``, after raising the open-files limit."""
    before, after = raise_open_files_limit()
    if after != before:
        log.info("open-files limit raised from %d to %d", before, after)
    limit = settings.max_connections or None
    if limit is not None and after != resource.RLIM_INFINITY and limit > after - FD_RESERVE:
        fitted = max(after - FD_RESERVE, 1)
        log.warning(
            "max_connections %d does not fit the open-files limit %d: using %d (raise the hard "
            "limit, e.g. LimitNOFILE= in the systemd unit, for more)",
            limit,
            after,
            fitted,
        )
        limit = fitted
    http = guarded_protocol(settings.header_timeout_s, settings.body_timeout_s, UPLOAD_ROUTES)
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=log_level.lower(),
        timeout_graceful_shutdown=10,
        http=http,
        limit_concurrency=limit,
        backlog=settings.backlog,
    )


__all__ = ["UPLOAD_ROUTES", "guarded_protocol", "make_config", "raise_open_files_limit"]

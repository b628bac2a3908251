"""What one client can hold of a real coordinator (`python -m coordinator`, coordinator/server.py):
a flood of half-sent requests without a token neither stops ``/health`` nor outlives the header
timeout; a slow body is cut on ordinary routes, a slow model upload that keeps sending is not;
a long-polling lease is never cut; past ``max_connections`` requests get 503 until the idle
connections are closed. Raw sockets stand for the clients: no HTTP library sends half a
request."""

from __future__ import annotations

import contextlib
import json
import resource
import selectors
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import ADMIN_TOKEN, TEST_SETTINGS, CoordinatorProcess, make_tiny_onnx, wait_for

from bnnbench.schemas import API_PREFIX, Endpoint

FLOOD = 1100  # half-sent requests; with the soft limit below they used to stop /health
CHILD_SOFT_NOFILE = 1024  # a common default soft limit: the coordinator must raise its own
HEADER_TIMEOUT = 2.0
BODY_TIMEOUT = 1.0
MAX_CONNECTIONS = FLOOD + 100  # above the flood; the last test goes past it
HEALTH_WITHIN = 2.0  # seconds /health may take during the flood (it takes milliseconds)
HALF_REQUEST = b"POST /api/v1/agents/lease?wait=5 HTTP/1.1\r\nHost: bnnbench\r\nContent-Le"


@contextlib.contextmanager
def soft_nofile(limit: int) -> Iterator[None]:
    """This process's soft open-files limit set to ``limit`` (children started inside
    inherit it), restored after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(limit, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture(scope="module", autouse=True)
def _enough_descriptors() -> None:
    """The test itself holds the flood's sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = FLOOD + 512
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.fail(f"the hard open-files limit is {hard}; this test needs {need} (ulimit -Hn)")
    if soft != resource.RLIM_INFINITY and soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CoordinatorProcess]:
    """One coordinator for the module, started with a soft open-files limit of 1024, short
    timeouts and a connection limit a little above the flood."""
    settings = {
        "header_timeout_s": HEADER_TIMEOUT,
        "body_timeout_s": BODY_TIMEOUT,
        "max_connections": MAX_CONNECTIONS,
    }
    c = CoordinatorProcess(
        tmp_path_factory.mktemp("coordinator"), {**TEST_SETTINGS, **settings}, ADMIN_TOKEN
    )
    with soft_nofile(CHILD_SOFT_NOFILE):
        c.start()
    try:
        yield c
    finally:
        c.stop()


def _connect(c: CoordinatorProcess) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", c.port), timeout=10)
    s.setblocking(False)
    return s


def _health(c: CoordinatorProcess) -> float:
    """Seconds a fresh connection's GET /health took; fails unless it answered 200."""
    start = time.monotonic()
    r = httpx.get(f"{c.url}/health", timeout=30)
    took = time.monotonic() - start
    assert r.status_code == 200, r.text
    return took


def _read_until_closed(socks: list[socket.socket], timeout: float) -> dict[socket.socket, bytes]:
    """What each socket received until the server closed it (those still open are missing)."""
    got: dict[socket.socket, bytearray] = {s: bytearray() for s in socks}
    closed: dict[socket.socket, bytes] = {}
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    while len(closed) < len(socks) and time.monotonic() < deadline:
        for key, _ in sel.select(0.2):
            s = key.fileobj
            assert isinstance(s, socket.socket)
            try:
                chunk = s.recv(4096)
            except BlockingIOError:
                continue
            except ConnectionResetError:
                chunk = b""
            if chunk:
                got[s] += chunk
                continue
            sel.unregister(s)
            closed[s] = bytes(got[s])
    sel.close()
    return closed


def _closed_now(socks: list[socket.socket]) -> int:
    """How many of these sockets the server has closed or answered (readable at once)."""
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    n = len(sel.select(0))
    sel.close()
    return n


@pytest.mark.slow  # 1,100 connections and two timeouts: ~10 s
def test_a_flood_of_half_sent_requests_does_not_stop_health(guarded: CoordinatorProcess) -> None:
    c = guarded
    assert f"open-files limit raised from {CHILD_SOFT_NOFILE}" in c.log_tail(200), c.log_tail()
    _health(c)
    socks: list[socket.socket] = []
    idle: list[socket.socket] = []
    try:
        opened = time.monotonic()
        for i in range(FLOOD):
            s = _connect(c)
            s.sendall(HALF_REQUEST)
            socks.append(s)
            if i % 100 == 0:  # /health answers while the flood builds up
                assert _health(c) < HEALTH_WITHIN
        idle = [_connect(c) for _ in range(20)]  # connections that never send a byte
        during = [_health(c) for _ in range(5)]
        assert max(during) < HEALTH_WITHIN, during
        # the server waits out the header timeout before it gives up on a connection
        if time.monotonic() - opened < HEADER_TIMEOUT / 2:
            assert _closed_now(socks[-100:] + idle) == 0
        closed = _read_until_closed(socks + idle, timeout=HEADER_TIMEOUT + 60)
        took = time.monotonic() - opened
        assert len(closed) == len(socks) + len(idle), f"{len(closed)} closed after {took:.1f} s"
        answers = {closed[s] for s in socks}
        # a half-sent request is answered 408 then closed; an idle connection just closed
        assert len(answers) == 1 and next(iter(answers)).startswith(b"HTTP/1.1 408 "), answers
        assert {closed[s] for s in idle} == {b""}
        assert _health(c) < HEALTH_WITHIN  # and after
        assert "closed slow connections" in c.log_tail(200)
    finally:
        for s in socks + idle:
            s.close()


def _multipart(path: Path) -> tuple[bytes, bytes]:
    boundary = b"bnnbench-test-boundary"
    body = (
        b"--" + boundary + b"\r\n"
        b'Content-Disposition: form-data; name="file"; filename="slow.onnx"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n" + path.read_bytes() + b"\r\n"
        b"--" + boundary + b"--\r\n"
    )
    return boundary, body


def _request_head(c: CoordinatorProcess, path: str, ctype: bytes, length: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: bnnbench\r\n"
        f"Authorization: Bearer {c.admin_token}\r\nContent-Length: {length}\r\n".encode()
        + b"Content-Type: "
        + ctype
        + b"\r\nConnection: close\r\n\r\n"
    )


def _trickle(s: socket.socket, body: bytes, pieces: int, gap: float) -> None:
    """Send ``body`` in ``pieces``, ``gap`` seconds apart; stops early once the server has
    answered or closed."""
    step = -(-len(body) // pieces)
    for i in range(0, len(body), step):
        s.sendall(body[i : i + step])
        if _closed_now([s]):
            return
        time.sleep(gap)


def _response(s: socket.socket, timeout: float = 60) -> bytes:
    s.setblocking(True)
    s.settimeout(timeout)
    out = bytearray()
    with contextlib.suppress(ConnectionResetError):
        while chunk := s.recv(65536):
            out += chunk
    return bytes(out)


@pytest.mark.slow  # trickled bodies and a long poll: ~10 s
def test_slow_bodies_and_long_polls(guarded: CoordinatorProcess, tmp_path: Path) -> None:
    c = guarded
    # a model upload sent in pieces for longer than both timeouts, never stalling for one
    boundary, body = _multipart(make_tiny_onnx(tmp_path / "slow.onnx", "bnn"))
    head = _request_head(
        c, API_PREFIX + Endpoint.MODELS, b"multipart/form-data; boundary=" + boundary, len(body)
    )
    pieces, gap = 8, BODY_TIMEOUT * 0.4  # 8 x 0.4 s = 3.2 s > HEADER_TIMEOUT + BODY_TIMEOUT
    with _connect(c) as s:
        s.setblocking(True)
        started = time.monotonic()
        s.sendall(head)
        _trickle(s, body, pieces, gap)
        answer = _response(s)
        assert time.monotonic() - started > HEADER_TIMEOUT + BODY_TIMEOUT
    status, _, rest = answer.partition(b"\r\n")
    assert status.startswith(b"HTTP/1.1 201 "), answer[:300]
    model = json.loads(rest.split(b"\r\n\r\n", 1)[1])
    assert c.client.get_model(model["id"]).sha256 == model["sha256"]

    # the same upload stalling longer than the body timeout is cut
    with _connect(c) as s:
        s.setblocking(True)
        s.sendall(head + body[: len(body) // 2])
        stalled = _response(s, timeout=BODY_TIMEOUT + 60)
    assert stalled.startswith(b"HTTP/1.1 408 "), stalled[:300]
    assert c.client.list_models() == [c.client.get_model(model["id"])]  # nothing half-stored

    # an ordinary JSON body sent slower than the body timeout allows is cut, steady or not
    job = json.dumps({"model_id": model["id"], "library": "native", "threads": [1]}).encode()
    with _connect(c) as s:
        s.setblocking(True)
        s.sendall(_request_head(c, API_PREFIX + Endpoint.JOBS, b"application/json", len(job)))
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            _trickle(s, job, 8, BODY_TIMEOUT * 0.4)  # 8 x 0.4 s = 3.2 s > BODY_TIMEOUT
        cut = _response(s)
    assert cut.startswith(b"HTTP/1.1 408 "), cut[:300]
    assert c.client.list_jobs() == []

    # a long-polling lease outlasts both timeouts: the request is in, the app answers in time
    _, agent = c.register_agent("poller")
    started = time.monotonic()
    assert agent.lease(wait=HEADER_TIMEOUT + BODY_TIMEOUT) is None  # 204: nothing queued
    assert time.monotonic() - started >= HEADER_TIMEOUT + BODY_TIMEOUT - 0.5
    # the agent's kept-alive connection serves the next call
    assert agent.heartbeat(None).lease_extended_until is None


@pytest.mark.slow  # 1,100 connections, a timeout
def test_past_max_connections_requests_get_503_until_idle_ones_close(
    guarded: CoordinatorProcess,
) -> None:
    c = guarded
    idle = [_connect(c) for _ in range(MAX_CONNECTIONS)]
    try:
        r = httpx.get(f"{c.url}/health", timeout=30)
        assert r.status_code == 503, r.text
        # the idle connections are closed at the header timeout, and the server serves again
        wait_for(
            lambda: httpx.get(f"{c.url}/health", timeout=30).status_code == 200,
            timeout=60,
            what="/health to answer 200 again",
            context=lambda: c.log_tail(20),
        )
        assert len(_read_until_closed(idle, timeout=60)) == len(idle)
    finally:
        for s in idle:
            s.close()

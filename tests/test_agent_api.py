"""Retry policy of the agent's HTTP layer (bnnbench.http) against a real local HTTP server."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bnnbench.http import Backoff, HttpCore, Retry, Stopped
from bnnbench.schemas import API_PREFIX


class Scripted:
    """Answers POST/GET with the next status of ``statuses`` (then 200 forever)."""

    def __init__(self) -> None:
        self.statuses: list[int] = []
        self.seen: list[tuple[str, str | None]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                outer.seen.append((self.path, self.headers.get("Authorization")))
                code = outer.statuses.pop(0) if outer.statuses else 200
                body = b'{"detail": "scripted %d"}' % code
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer  # noqa: N815 - http.server API

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()


@pytest.fixture
def server() -> Iterator[Scripted]:
    s = Scripted()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def test_backoff_grows_is_capped_and_never_overflows():
    b = Backoff(base=0.25, cap=4.0)
    waits = [b.next() for _ in range(6)]
    assert 0.125 <= waits[0] <= 0.25
    assert all(2.0 <= w <= 4.0 for w in waits[4:])  # 0.25·2⁴ = 4 = cap
    b.attempt = 100_000  # days of outage
    assert 2.0 <= b.next() <= 4.0


def test_outage_statuses_are_retried_until_success(server: Scripted):
    server.statuses = [503, 502, 504, 503]
    api = HttpCore(server.url, token="tok", retry=Retry(max_backoff=0.02))
    resp = api.send("POST", "/agents/heartbeat", json={"job_id": None})
    assert resp.status_code == 200
    assert len(server.seen) == 5
    assert server.seen[-1] == (f"{API_PREFIX}/agents/heartbeat", "Bearer tok")


def test_persistent_server_error_is_given_up(server: Scripted):
    server.statuses = [500] * 10
    api = HttpCore(server.url, retry=Retry(max_backoff=0.02, max_server_errors=3))
    resp = api.send("POST", "/agents/lease")
    assert resp.status_code == 500
    assert len(server.seen) == 4  # the first try and three retries


def test_client_errors_are_returned_at_once(server: Scripted):
    server.statuses = [409]
    api = HttpCore(server.url, retry=Retry(max_backoff=0.02))
    resp = api.send("POST", "/jobs/1/result", json={})
    assert resp.status_code == 409 and len(server.seen) == 1


def test_a_stop_request_ends_the_retries_of_an_unreachable_coordinator():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    stop = threading.Event()
    api = HttpCore(f"http://127.0.0.1:{port}", retry=Retry(max_backoff=0.05, stop=stop))
    threading.Timer(0.3, stop.set).start()
    with pytest.raises(Stopped):
        api.send("POST", "/agents/heartbeat", json={})

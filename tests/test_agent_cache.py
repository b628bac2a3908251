"""Artifact cache against a real HTTP server (http.server in a thread, no mocks)."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from agent.cache import ArtifactCache, ArtifactError
from bnnbench.client import BnnbenchClient
from bnnbench.http import ApiError, Retry
from bnnbench.schemas import API_PREFIX, ArtifactRef


class Blob:
    """What the server answers for one URL; ``script`` is consumed one entry per request."""

    def __init__(self, body: bytes, header_sha: str | None = None) -> None:
        self.body = body
        self.header_sha = header_sha if header_sha is not None else sha(body)
        self.script: list[str] = []  # "503" | "truncate" before the normal answer
        self.requests = 0


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


class Server:
    def __init__(self) -> None:
        self.blobs: dict[str, Blob] = {}
        blobs = self.blobs

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server API
                blob = blobs.get(self.path)
                if blob is None:
                    self._json(404, b'{"detail": "artifact 99 not found"}')
                    return
                blob.requests += 1
                step = blob.script.pop(0) if blob.script else "ok"
                if step == "503":
                    self._json(503, b'{"detail": "restarting"}')
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(blob.body)))
                if blob.header_sha:
                    self.send_header("X-Content-SHA256", blob.header_sha)
                self.end_headers()
                if step == "truncate":  # connection dies mid-body
                    self.wfile.write(blob.body[: len(blob.body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(blob.body)

            def _json(self, code: int, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def add(self, artifact_id: int, blob: Blob) -> ArtifactRef:
        path = f"{API_PREFIX}/artifacts/{artifact_id}/download"
        self.blobs[path] = blob
        return ArtifactRef(
            id=artifact_id,
            sha256=sha(blob.body),
            size=len(blob.body),
            library="native",
            download_url=path,
        )

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


@pytest.fixture
def api(server: Server) -> Iterator[BnnbenchClient]:
    a = BnnbenchClient(server.url, token="t", retry=Retry(max_backoff=0.05))
    yield a
    a.close()


def _leftovers(cache: ArtifactCache) -> list[str]:
    return sorted(p.name for p in cache.dir.iterdir())


def test_download_once_then_served_from_cache(tmp_path: Path, server: Server, api: BnnbenchClient):
    body = bytes(range(256)) * 1000
    blob = Blob(body)
    ref = server.add(1, blob)
    cache = ArtifactCache(tmp_path)
    p1 = cache.fetch(api, ref)
    p2 = cache.fetch(api, ref)
    assert p1 == p2 == tmp_path / "artifacts" / ref.sha256
    assert p1.read_bytes() == body
    assert blob.requests == 1
    assert _leftovers(cache) == [ref.sha256]  # no temporary files left behind


def test_damaged_cached_file_is_downloaded_again(tmp_path: Path, server: Server, api):
    body = b"model bytes " * 500
    blob = Blob(body)
    ref = server.add(2, blob)
    cache = ArtifactCache(tmp_path)
    path = cache.fetch(api, ref)
    path.write_bytes(b"bit rot" + body[7:])  # same size, different content
    again = cache.fetch(api, ref)
    assert again.read_bytes() == body
    assert blob.requests == 2


def test_corrupted_body_is_rejected_and_deleted(tmp_path: Path, server: Server, api):
    cache = ArtifactCache(tmp_path)
    good = server.add(3, Blob(b"a good artifact" * 10))
    good_path = cache.fetch(api, good)

    body = b"the real artifact" * 100
    ref = server.add(4, Blob(body))
    # the server now serves different bytes while still announcing the original hash
    bad = server.blobs[ref.download_url]
    bad.body = b"X" + body[1:]
    bad.header_sha = ref.sha256
    with pytest.raises(ArtifactError) as err:
        cache.fetch(api, ref)
    msg = str(err.value)
    assert ref.sha256 in msg and sha(bad.body) in msg and "discarded" in msg
    assert cache.lookup(ref.sha256) is None
    assert _leftovers(cache) == [good.sha256]  # nothing of the bad download is kept
    assert good_path.read_bytes() == b"a good artifact" * 10


def test_header_hash_mismatch_is_rejected(tmp_path: Path, server: Server, api):
    body = b"payload" * 64
    ref = server.add(5, Blob(body, header_sha="0" * 64))
    cache = ArtifactCache(tmp_path)
    with pytest.raises(ArtifactError, match="X-Content-SHA256 0000"):
        cache.fetch(api, ref)
    assert _leftovers(cache) == []


def test_missing_hash_header_is_rejected(tmp_path: Path, server: Server, api):
    ref = server.add(6, Blob(b"payload" * 64, header_sha=""))
    cache = ArtifactCache(tmp_path)
    with pytest.raises(ArtifactError, match="no X-Content-SHA256 header"):
        cache.fetch(api, ref)
    assert _leftovers(cache) == []


def test_outage_and_broken_stream_are_retried(tmp_path: Path, server: Server, api):
    body = bytes(range(256)) * 4096  # 1 MiB: the truncated answer is a real partial body
    blob = Blob(body)
    blob.script = ["503", "truncate", "503"]
    ref = server.add(7, blob)
    cache = ArtifactCache(tmp_path)
    path = cache.fetch(api, ref)
    assert path.read_bytes() == body
    assert blob.requests == 4
    assert _leftovers(cache) == [ref.sha256]


def test_missing_artifact_is_a_clear_api_error(tmp_path: Path, server: Server, api):
    ref = ArtifactRef(
        id=99,
        sha256="a" * 64,
        size=1,
        library="native",
        download_url=f"{API_PREFIX}/artifacts/99/download",
    )
    cache = ArtifactCache(tmp_path)
    with pytest.raises(ApiError) as err:
        cache.fetch(api, ref)
    assert err.value.status_code == 404 and "artifact 99 not found" in str(err.value)
    assert _leftovers(cache) == []


def test_invalid_sha_is_refused_before_touching_disk(tmp_path: Path, server: Server, api):
    ref = ArtifactRef(
        id=1,
        sha256="../../etc/passwd",
        size=1,
        library="native",
        download_url=f"{API_PREFIX}/artifacts/1/download",
    )
    with pytest.raises(ArtifactError, match="invalid artifact sha256"):
        ArtifactCache(tmp_path).fetch(api, ref)

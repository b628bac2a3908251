"""Coordinator logic modules on a real SQLite file and a real blob directory, in-process
(the HTTP side is covered by the other test_coordinator_* files against a real server)."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest
from helpers.rows import add_device
from sqlalchemy import func, select

from bnnbench.schemas import JobCreate, JobFailure, ResultIn
from bnnbench.settings import CoordinatorSettings
from coordinator import queue
from coordinator.auth import hash_token
from coordinator.db import Database
from coordinator.errors import Conflict, Unprocessable
from coordinator.models import Agent, Artifact, Job, Model, Result, utcnow
from coordinator.store import BlobStore, TooLarge
from coordinator.uploads import check_onnx_file, check_onnx_header

# ------------------------------------------------------------------ blob store


def test_blob_store_is_content_addressed_and_atomic(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    w = store.writer()
    w.write(b"hello ")
    w.write(b"world")
    sha, size = w.commit()
    assert size == 11
    assert store.path(sha) == tmp_path / "blobs" / sha[:2] / sha
    assert store.path(sha).read_bytes() == b"hello world"
    with store.writer() as w2:  # same bytes again: one file
        w2.write(b"hello world")
        assert w2.commit() == (sha, 11)
    assert store.blob_files() == [store.path(sha)]
    assert list(store.tmp_dir.iterdir()) == []


def test_blob_writer_over_cap_leaves_nothing(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    w = store.writer(max_bytes=10)
    w.write(b"12345")
    with pytest.raises(TooLarge, match="10 bytes"):
        w.write(b"678901")
    assert list(store.tmp_dir.iterdir()) == []
    assert store.blob_files() == []
    with store.writer() as w3:  # an exception inside the block aborts too
        w3.write(b"partial")
        tmp = w3.tmp_path
    assert not tmp.exists()


def test_blob_path_rejects_non_digests(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    with pytest.raises(ValueError):
        store.path("../../etc/passwd")


# ------------------------------------------------------------------ ONNX checks


def test_onnx_checks(tmp_path: Path, tiny_onnx: Path) -> None:
    check_onnx_file(tiny_onnx)  # a real model passes
    check_onnx_header(tiny_onnx.read_bytes()[:16])
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a model at all")
    with pytest.raises(Unprocessable, match="not an ONNX model"):
        check_onnx_file(bad)
    truncated = tmp_path / "trunc.onnx"
    truncated.write_bytes(tiny_onnx.read_bytes()[:1000])
    with pytest.raises(Unprocessable, match="not a valid ONNX model"):
        check_onnx_file(truncated)


# ------------------------------------------------------------------ queue


@pytest.fixture
def db(tmp_path: Path) -> Database:
    d = Database(CoordinatorSettings(data_dir=tmp_path))
    yield d
    d.dispose()


SETTINGS = CoordinatorSettings(lease_seconds=10, max_attempts=3)


def _setup(db: Database, n_agents: int = 2, artifact_status: str = "ready") -> list[int]:
    """One model with a native artifact; agents on one device each. Returns agent ids."""
    with db.session() as s:
        m = Model(name="m", sha256="a" * 64, size=1, analysis_status="done")
        s.add(m)
        s.flush()
        s.add(
            Artifact(
                model_id=m.id,
                library="native",
                status=artifact_status,
                sha256="b" * 64 if artifact_status == "ready" else None,
                size=1,
            )
        )
        ids = []
        for i in range(n_agents):
            d = add_device(s, f"dev{i}", fingerprint=f"dev{i}", hostname=f"h{i}")
            a = Agent(
                name=f"a{i}",
                token_hash=hash_token(f"t{i}"),
                device_id=d.id,
                runtimes={"native": "1"},
            )
            s.add(a)
            s.flush()
            ids.append(a.id)
        return ids


def _agent(s, agent_id: int) -> Agent:  # noqa: ANN001
    a = s.get(Agent, agent_id)
    assert a is not None
    return a


def _jobs(db: Database, threads: list[int], **kw) -> list[int]:  # noqa: ANN003
    with db.session() as s:
        jobs, _ = queue.create_jobs(s, JobCreate(model_id=1, threads=threads, **kw))
        return [j.id for j in jobs]


def test_create_jobs_one_per_thread_count_and_status_follows_artifact(db: Database) -> None:
    _setup(db, artifact_status="pending")
    ids = _jobs(db, [1, 2, 2, 4])
    assert len(ids) == 3  # duplicate thread counts collapse
    with db.session() as s:
        assert {j.status for j in s.scalars(select(Job))} == {"waiting"}
        assert queue.on_artifact_failed(s, 1, "node 'x' (Foo): unsupported") == 3
    with db.session() as s:
        errors = {j.error for j in s.scalars(select(Job))}
        assert errors == {"artifact conversion failed: node 'x' (Foo): unsupported"}
    with pytest.raises(Unprocessable):
        _jobs(db, [0])


def test_concurrent_leases_never_share_a_job(db: Database) -> None:
    agent_ids = _setup(db, n_agents=8)
    _jobs(db, [1])  # exactly one job
    got: list[int | None] = []
    barrier = threading.Barrier(len(agent_ids))

    def worker(agent_id: int) -> None:
        barrier.wait()
        with db.session() as s:
            job = queue.lease(s, _agent(s, agent_id), SETTINGS)
            got.append(job.id if job else None)

    threads = [threading.Thread(target=worker, args=(a,)) for a in agent_ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got.count(1) == 1 and got.count(None) == len(agent_ids) - 1
    with db.session() as s:
        job = s.get(Job, 1)
        assert job.status == "leased" and job.leased_by in agent_ids


def test_expiry_requeues_then_fails_after_max_attempts(db: Database) -> None:
    a1, a2 = _setup(db)
    _jobs(db, [1])
    t0 = utcnow()
    late = timedelta(seconds=SETTINGS.lease_seconds + 1)
    now = t0
    for attempt, agent_id in enumerate([a1, a2, a1], start=1):
        with db.session() as s:
            job = queue.lease(s, _agent(s, agent_id), SETTINGS, now=now)
            assert job is not None and job.leased_by == agent_id
        now = now + late
        with db.session() as s:
            assert queue.requeue_expired(s, SETTINGS.max_attempts, now=now) == 1
        with db.session() as s:
            job = s.get(Job, 1)
            assert job.attempts == attempt
            assert job.lease_id is None and job.leased_by is None
            expected = "failed" if attempt == SETTINGS.max_attempts else "queued"
            assert job.status == expected
    assert job.error == "lease expired 3 times (max_attempts=3)"
    with db.session() as s:  # nothing left to lease
        assert queue.lease(s, _agent(s, a2), SETTINGS, now=now) is None


def test_stale_lease_cannot_post_results(db: Database) -> None:
    a1, a2 = _setup(db)
    _jobs(db, [1], runs=3)
    with db.session() as s:
        first = queue.lease(s, _agent(s, a1), SETTINGS)
        old_lease = first.lease_id
    with db.session() as s:  # expire and hand to the other agent
        queue.requeue_expired(s, 3, now=utcnow() + timedelta(seconds=60))
    with db.session() as s:
        second = queue.lease(s, _agent(s, a2), SETTINGS)
        assert second.id == first.id and second.lease_id != old_lease
    body = ResultIn(lease_id=old_lease, samples_ms=[1.0, 1.0, 1.0], runtime_version="x")
    with pytest.raises(Conflict, match="stale lease"), db.session() as s:
        queue.submit_result(s, _agent(s, a1), first.id, body, SETTINGS)
    with pytest.raises(Conflict), db.session() as s:  # right lease id, wrong agent
        body2 = ResultIn(lease_id=second.lease_id, samples_ms=[1.0], runtime_version="x")
        queue.submit_result(s, _agent(s, a1), first.id, body2, SETTINGS)
    with pytest.raises(Conflict, match="stale lease"), db.session() as s:  # retried: kept once
        queue.submit_result(s, _agent(s, a1), first.id, body, SETTINGS)
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Result)) == 0
        job = s.get(Job, first.id)
        assert job.status == "leased" and job.lease_id == second.lease_id
        # the late result is history, never the result: one line, whoever measured what
        late = [e for e in job.history if e["event"] == "late result refused"]
        assert len(late) == 1, job.history
        assert late[0]["agent"] == a1 and late[0]["lease_id"] == old_lease
        assert late[0]["samples"] == 3 and late[0]["median_ms"] == 1.0
    with db.session() as s:
        good = ResultIn(lease_id=second.lease_id, samples_ms=[2.0, 1.98, 2.02], runtime_version="x")
        r = queue.submit_result(s, _agent(s, a2), first.id, good, SETTINGS)
        assert r.median_ms == 2.0 and r.valid
        accepted = r.id
    with db.session() as s:  # the same post again (its answer was lost): the same result back
        again = queue.submit_result(s, _agent(s, a2), first.id, good, SETTINGS)
        assert again.id == accepted
    with pytest.raises(Conflict), db.session() as s:  # the other agent cannot replay it
        queue.submit_result(s, _agent(s, a1), first.id, good, SETTINGS)
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Result)) == 1
        assert s.get(Job, first.id).status == "done"


def _lease_and_fail(db: Database, agent_id: int, error: str, retryable: bool = True) -> Job:
    """The agent leases the next job and reports it failed: the job as the report left it."""
    with db.session() as s:
        job = queue.lease(s, _agent(s, agent_id), SETTINGS)
        assert job is not None
        job_id, lease_id = job.id, job.lease_id
    with db.session() as s:
        failure = JobFailure(lease_id=lease_id, error=error, retryable=retryable)
        return queue.report_failure(s, _agent(s, agent_id), job_id, failure, SETTINGS)


def test_failure_reports_requeue_then_fail(db: Database) -> None:
    (a1,) = _setup(db, n_agents=1)
    _jobs(db, [1])
    for attempt in (1, 2, 3):
        job = _lease_and_fail(db, a1, f"boom {attempt}")
        assert job.attempts == attempt
        assert job.status == ("failed" if attempt == 3 else "queued")
    assert "boom 3" in job.error and "failed 3 times" in job.error
    # not retryable: fails at once
    _jobs(db, [2])
    job = _lease_and_fail(db, a1, "model rejected", retryable=False)
    assert job.status == "failed" and job.attempts == 1 and "model rejected" in job.error


def test_agents_get_only_their_device_and_runtimes(db: Database) -> None:
    a1, a2 = _setup(db)
    with db.session() as s:
        dev2 = _agent(s, a2).device_id
        _agent(s, a1).runtimes = {"lce": "0.16"}  # a1 cannot run native
    _jobs(db, [1], device_id=dev2)
    with db.session() as s:
        assert queue.lease(s, _agent(s, a1), SETTINGS) is None
    with db.session() as s:
        assert queue.lease(s, _agent(s, a2), SETTINGS).device_id == dev2


def test_verdict() -> None:
    s = CoordinatorSettings(min_valid_samples=3, max_rel_stdev=0.5)
    assert queue.verdict([1.0, 1.01, 0.99], 3, s)[0] is True
    ok, text = queue.verdict([1.0, 1.1], 10, s)
    assert not ok and "2 of 10" in text and "fewer than 3" in text
    ok, text = queue.verdict([1.0, 1.0, 1.0, 50.0], 4, s)
    assert not ok and "noisy" in text


# ------------------------------------------------------------------ upload parsing


def _multipart(data: bytes, fields: dict[str, str]) -> tuple[bytes, str]:
    boundary = "----bnnbench-test-boundary"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="dir/m.onnx"\r\nContent-Type: application/octet-stream\r\n\r\n'.encode()
        + data
        + b"\r\n"
    )
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), boundary


def _receive(body: bytes, chunks: list[int], tmp_path: Path, **settings):  # noqa: ANN003
    """Run receive_upload on a real Starlette Request fed in the given chunk sizes."""
    import asyncio

    from starlette.requests import Request

    from coordinator.uploads import receive_upload

    pieces, pos = [], 0
    for n in chunks:
        pieces.append(body[pos : pos + n])
        pos += n
    pieces.append(body[pos:])
    messages = [
        {"type": "http.request", "body": p, "more_body": i < len(pieces) - 1}
        for i, p in enumerate(pieces)
    ]

    async def receive() -> dict:
        return messages.pop(0)

    def run(boundary: str) -> object:
        scope = {
            "type": "http",
            "method": "POST",
            "path": "/",
            "headers": [
                (b"content-type", f"multipart/form-data; boundary={boundary}".encode()),
                (b"content-length", str(len(body)).encode()),
            ],
        }
        store = BlobStore(tmp_path)
        return store, asyncio.run(
            receive_upload(
                Request(scope, receive), store, CoordinatorSettings(data_dir=tmp_path, **settings)
            )
        )

    return run


def test_upload_parsing_with_a_small_last_chunk(tmp_path: Path, tiny_onnx: Path) -> None:
    data = tiny_onnx.read_bytes()
    body, boundary = _multipart(data, {"name": "my model", "arch": "TinyVGG"})
    # small network chunks: the file's tail sits in the writer's buffer when the request
    # ends; the ONNX check must still see the whole file (it once did not)
    store, up = _receive(body, [1000] * (len(body) // 1000), tmp_path)(boundary)
    assert up.size == len(data) and up.filename == "m.onnx"
    assert up.fields == {"name": "my model", "arch": "TinyVGG"}
    assert store.path(up.sha256).read_bytes() == data
    assert list(store.tmp_dir.iterdir()) == []


def test_upload_parsing_rejects_and_cleans_up(tmp_path: Path, tiny_onnx: Path) -> None:
    from coordinator.errors import PayloadTooLarge

    data = tiny_onnx.read_bytes()
    body, boundary = _multipart(data, {})
    with pytest.raises(PayloadTooLarge, match="max_upload_bytes"):
        _receive(body, [1000] * 20, tmp_path, max_upload_bytes=len(data) - 1)(boundary)
    store = BlobStore(tmp_path)
    assert store.blob_files() == [] and list(store.tmp_dir.iterdir()) == []
    body, boundary = _multipart(b"not onnx", {})
    with pytest.raises(Unprocessable, match="ONNX"):
        _receive(body, [], tmp_path)(boundary)
    assert store.blob_files() == [] and list(store.tmp_dir.iterdir()) == []
    body, boundary = _multipart(data, {"name": "x" * 5000})
    with pytest.raises(Unprocessable, match="longer than"):
        _receive(body, [], tmp_path)(boundary)
    assert list(store.tmp_dir.iterdir()) == []

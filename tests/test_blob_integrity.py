"""Blobs whose bytes change on disk after they were stored (issue 14): a corrupt artifact is
never served, it is converted again from its model while its jobs wait (no attempt counted); a
corrupt model fails its conversion with a clear error until it is uploaded again."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from conftest import CoordinatorProcess, make_tiny_onnx, result_for, wait_for

import coordinator.store as store_mod
from bnnbench.http import ApiError
from bnnbench.schemas import JobFailure
from coordinator.store import BlobStore


def _flip_a_byte(path: Path) -> bytes:
    """Change one byte in place (same size: only a hash can tell); returns the old bytes."""
    good = path.read_bytes()
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0xFF
    path.write_bytes(bytes(bad))
    return good


def _blob(c: CoordinatorProcess, sha: str) -> Path:
    return c.data_dir / "blobs" / sha[:2] / sha


def test_corrupt_artifact_is_reconverted_and_no_job_fails(
    coordinator: CoordinatorProcess, tiny_onnx: Path, tmp_path: Path
) -> None:
    c = coordinator
    m = c.client.upload_model(tiny_onnx)
    (job,) = c.client.create_jobs(m.id, "native", [1], runs=3)
    art = c.client.wait_artifact(job.artifact_id)
    assert art.status == "ready" and art.sha256, art.error
    _, agent = c.register_agent("a", runtimes={"native": "native-test"})
    lease = agent.lease(wait=5)
    assert lease is not None and lease.job_id == job.id
    assert agent.download_artifact(art.id, tmp_path / "first") == art.sha256  # now remembered

    good = _flip_a_byte(_blob(c, art.sha256))
    with pytest.raises(ApiError) as err:
        agent.download_artifact(art.id, tmp_path / "second")
    assert err.value.status_code == 409
    assert "corrupt" in err.value.detail and art.sha256 in err.value.detail, err.value.detail
    assert "converted again" in err.value.detail
    # the bad bytes left the store for quarantine/; the job waits, its attempt not counted
    assert not _blob(c, art.sha256).exists()
    (quarantined,) = (c.data_dir / "quarantine").iterdir()
    assert hashlib.sha256(quarantined.read_bytes()).hexdigest() != art.sha256
    waiting = c.client.get_job(job.id)
    assert waiting.status in ("waiting", "queued") and waiting.attempts == 0, waiting
    # what the agent does next (reports the failed download) changes nothing
    failure = JobFailure(lease_id=lease.lease_id, error="artifact download failed")
    with pytest.raises(ApiError) as stale:
        agent.post_failure(job.id, failure)
    assert stale.value.status_code == 409

    again = c.client.wait_artifact(art.id)
    assert again.status == "ready" and again.sha256, again.error
    assert _blob(c, again.sha256).read_bytes() == good  # the conversion is deterministic
    lease = agent.lease(wait=5)
    assert lease is not None and lease.job_id == job.id
    dest = tmp_path / "third"
    assert agent.download_artifact(art.id, dest) == again.sha256
    assert dest.read_bytes() == good
    agent.post_result(job.id, result_for(lease, [1.0, 1.01, 0.99]))
    done = c.client.get_job(job.id)
    assert done.status == "done" and done.attempts == 0, done


@pytest.mark.slow  # a coordinator of its own
def test_corrupt_model_fails_its_conversion_until_uploaded_again(
    coordinator: CoordinatorProcess, tmp_path: Path
) -> None:
    c = coordinator
    onnx = make_tiny_onnx(tmp_path / "m.onnx", seed=3)
    m = c.client.upload_model(onnx)
    wait_for(  # the analysis reads the model too: let it finish first
        lambda: c.client.get_model(m.id).analysis_status == "done", what="analysis"
    )
    _flip_a_byte(_blob(c, m.sha256))

    (job,) = c.client.create_jobs(m.id, "native", [1], runs=3)
    art = c.client.wait_artifact(job.artifact_id)
    assert art.status == "failed"
    assert art.error and art.error.startswith("stored model is corrupt"), art.error
    assert "upload the model again" in art.error
    failed = c.client.get_job(job.id)
    assert failed.status == "failed" and "stored model is corrupt" in (failed.error or "")
    assert not _blob(c, m.sha256).exists()  # quarantined: an upload stores the bytes afresh

    assert c.client.upload_model(onnx).id == m.id
    assert _blob(c, m.sha256).read_bytes() == onnx.read_bytes()
    c.client.retry_artifact(art.id)
    assert c.client.wait_artifact(art.id).status == "ready"


def test_verify_rehashes_only_changed_blobs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = BlobStore(tmp_path)
    with store.writer() as w:
        w.write(b"x" * 1000)
        sha, _ = w.commit()
    hashed: list[Path] = []
    real = store_mod.sha256_file

    def counting(path: str | Path) -> str:
        hashed.append(Path(path))
        return real(path)

    monkeypatch.setattr(store_mod, "sha256_file", counting)
    assert store.verify(sha) is None and hashed == []  # hashed while written: trusted
    path = store.path(sha)
    path.write_bytes(b"y" * 1000)  # same size, new bytes
    corrupt = store.verify(sha)
    assert corrupt is not None and corrupt.actual == hashlib.sha256(b"y" * 1000).hexdigest()
    assert len(hashed) == 1 and "corrupt" in str(corrupt)
    path.write_bytes(b"x" * 1000)
    assert store.verify(sha) is None and len(hashed) == 2
    assert store.verify(sha) is None and len(hashed) == 2  # unchanged since: not re-hashed
    os.utime(path, ns=(0, 0))  # any change of the stat stamp means hashing again
    assert store.verify(sha) is None and len(hashed) == 3
    moved = store.quarantine(sha)
    assert moved is not None and moved.read_bytes() == b"x" * 1000 and not path.exists()

"""Restarts: everything lives in the SQLite file and the blob store; pending and interrupted
conversions are resumed; a crash (SIGKILL) loses nothing committed."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from conftest import CoordinatorProcess, make_tiny_onnx, result_for, wait_for

pytestmark = pytest.mark.slow  # real processes, seconds each: not for the inner loop


def test_restart_keeps_everything(
    coordinator: CoordinatorProcess, tiny_onnx: Path, tmp_path: Path
) -> None:
    c = coordinator
    m = c.client.upload_model(tiny_onnx, arch="Tiny", algorithm="bnn")
    jobs = c.client.create_jobs(m.id, "native", [1, 2], runs=3)
    art = c.client.wait_artifact(jobs[0].artifact_id)
    wait_for(lambda: c.client.get_model(m.id).analysis_status == "done", what="analysis")
    reg, agent = c.register_agent("keeper")
    lease = agent.lease(wait=5)
    result = agent.post_result(lease.job_id, result_for(lease, [1.98, 2.0, 2.02]))
    before = {
        "models": c.client.list_models(),
        "artifacts": c.client.list_artifacts(),
        "jobs": c.client.list_jobs(),
        "results": c.client.results(),
        "table": c.client.table(),
    }
    assert before["table"]["rows"]

    # graceful: uvicorn re-raises the SIGTERM after its shutdown completes
    assert c.stop() in (0, -15)
    assert c.log_tail(5).count("Application shutdown complete") == 1
    c.start()
    after = {
        "models": c.client.list_models(),
        "artifacts": c.client.list_artifacts(),
        "jobs": c.client.list_jobs(),
        "results": c.client.results(),
        "table": c.client.table(),
    }
    assert after == before
    assert after["results"][0].id == result.id
    # the agent's token survives (only its hash is stored) and the queue goes on
    agent = c.make_client(reg.token)
    lease2 = agent.lease(wait=5)
    assert lease2 is not None and lease2.job_id == jobs[1].id
    dest = tmp_path / "a.bnn"
    assert agent.download_artifact(art.id, dest) == art.sha256


def test_pending_and_interrupted_conversions_resume(
    coordinator_factory: Any, tiny_onnx: Path, tmp_path: Path
) -> None:
    c: CoordinatorProcess = coordinator_factory(conversion_workers=0)  # conversions paused
    m1 = c.client.upload_model(tiny_onnx)
    other = tmp_path / "other.onnx"
    make_tiny_onnx(other, "fp32")
    m2 = c.client.upload_model(other)
    j1 = c.client.create_jobs(m1.id, "native", [1, 2])
    j2 = c.client.create_jobs(m2.id, "native", [1])
    assert c.client.get_artifact(j1[0].artifact_id).status == "pending"
    assert {j.status for j in c.client.list_jobs()} == {"waiting"}
    c.stop()

    # simulate a crash in the middle of m2's conversion and m1's analysis: rows left
    # "converting"/"running" and a half-written file in tmp/
    con = sqlite3.connect(c.db_path)
    con.execute("UPDATE artifacts SET status='converting' WHERE id=?", (j2[0].artifact_id,))
    con.execute("UPDATE models SET analysis_status='running' WHERE id=?", (m1.id,))
    con.commit()
    con.close()
    partial = c.data_dir / "tmp" / "artifact-2-half"
    partial.write_bytes(b"half a conversion")

    c.start(conversion_workers=1)
    for jobs in (j1, j2):
        art = c.client.wait_artifact(jobs[0].artifact_id)
        assert art.status == "ready", art.error
        blob = c.data_dir / "blobs" / art.sha256[:2] / art.sha256
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == art.sha256
    assert {j.status for j in c.client.list_jobs()} == {"queued"}
    for m in (m1, m2):
        wait_for(lambda m=m: c.client.get_model(m.id).analysis_status == "done", what="analysis")
    assert not partial.exists()
    assert c.client.get_model(m2.id).algorithm == "fp32"


def test_crash_loses_nothing_committed(coordinator_factory: Any, tiny_onnx: Path) -> None:
    c: CoordinatorProcess = coordinator_factory(lease_seconds=120)  # outlives the restart
    m = c.client.upload_model(tiny_onnx)
    jobs = c.client.create_jobs(m.id, "native", [1])
    c.client.wait_artifact(jobs[0].artifact_id)
    reg, agent = c.register_agent("crashy")
    lease = agent.lease(wait=5)
    c.kill()  # SIGKILL: no shutdown code runs
    c.start()
    job = c.client.get_job(lease.job_id)
    assert job.status == "leased" and job.leased_by == reg.agent_id
    agent = c.make_client(reg.token)
    res = agent.post_result(lease.job_id, result_for(lease, [1.0, 1.0, 1.0], "v"))
    assert res.job_id == lease.job_id
    assert c.client.get_job(lease.job_id).status == "done"
    assert c.query("PRAGMA integrity_check") == [("ok",)]

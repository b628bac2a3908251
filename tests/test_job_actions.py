"""Operator actions on jobs through the REST API and the client: cancel (never leased again;
the agent's heartbeat, result and failure report get a clear 409), retry (failed or
cancelled back to the queue, attempts reset), re-run (a new job with the same settings).

One real coordinator for the module; each test leaves no job queued, so the next test's
lease takes its own job."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import CoordinatorProcess, make_tiny_onnx, result_for
from helpers.campaign import module_coordinator

from bnnbench.client import BnnbenchClient
from bnnbench.http import ApiError
from bnnbench.schemas import JobFailure, JobLease, JobOut

SAMPLES = [10.0, 10.1, 9.9]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with module_coordinator(tmp_path_factory, "actions-admin-token-9e4c") as c:
        path = make_tiny_onnx(tmp_path_factory.mktemp("models") / "tiny_bnn.onnx", "bnn")
        model = c.client.upload_model(path)
        (first,) = c.client.create_jobs(model.id, "native", [1], runs=3)
        c.client.wait_jobs([first.id], timeout=120, until=lambda j: j.status != "waiting")
        reg, agent = c.register_agent("worker", runtimes={"native": "test-1"}, cores=4)
        yield {"c": c, "model": model, "agent": agent, "reg": reg, "first": first}


def _lease(agent: BnnbenchClient, job: JobOut) -> JobLease:
    lease = agent.lease(wait=5)
    assert lease is not None and lease.job_id == job.id, lease
    return lease


def _queued(c: CoordinatorProcess, model_id: int, **kw: Any) -> JobOut:
    (job,) = c.client.create_jobs(model_id, "native", kw.pop("threads", [1]), runs=3, **kw)
    assert job.status == "queued"
    return job


def _conflict(call: Any, *words: str) -> str:
    with pytest.raises(ApiError) as exc:
        call()
    assert exc.value.status_code == 409, exc.value.detail
    for w in words:
        assert w in exc.value.detail
    return exc.value.detail


def test_a_cancelled_queued_job_is_never_leased(env: dict[str, Any]) -> None:
    c, agent = env["c"], env["agent"]
    first: JobOut = env["first"]
    out = c.client.cancel_job(first.id)
    assert (out.status, out.error) == ("cancelled", "cancelled by the operator")
    assert agent.lease(wait=0.5) is None  # the only queued job was cancelled
    [(status, lease_id)] = c.query("SELECT status, lease_id FROM jobs WHERE id = ?", first.id)
    assert (status, lease_id) == ("cancelled", None)
    assert c.client.get_job(first.id).status == "cancelled"
    # a waiter is not stuck on a cancelled job: cancelled is terminal for wait_jobs
    assert [j.status for j in c.client.wait_jobs([first.id], timeout=5)] == ["cancelled"]
    assert {j.id for j in c.client.list_jobs(status="cancelled")} >= {first.id}


def test_cancelling_a_leased_job_refuses_the_agents_reports(env: dict[str, Any]) -> None:
    c, agent = env["c"], env["agent"]
    job = _queued(c, env["model"].id)
    lease = _lease(agent, job)
    assert agent.heartbeat(job.id).lease_extended_until is not None
    out = c.client.cancel_job(job.id)
    assert out.status == "cancelled" and out.leased_by is None and out.lease_expires_at is None
    _conflict(lambda: agent.heartbeat(job.id), f"job {job.id} was cancelled")
    _conflict(
        lambda: agent.post_result(job.id, result_for(lease, SAMPLES)),
        f"job {job.id} was cancelled",
        "nothing was recorded",
    )
    _conflict(
        lambda: agent.post_failure(job.id, JobFailure(lease_id=lease.lease_id, error="x")),
        "was cancelled",
    )
    assert c.client.results(job_id=job.id) == []
    assert c.client.get_job(job.id).status == "cancelled"
    [events] = c.query("SELECT history FROM jobs WHERE id = ?", job.id)
    assert '"event": "cancelled"' in events[0] and '"was": "leased"' in events[0]


def test_retry_queues_a_failed_job_with_attempts_reset(env: dict[str, Any]) -> None:
    c, agent = env["c"], env["agent"]
    job = _queued(c, env["model"].id)
    lease = _lease(agent, job)
    failed = agent.post_failure(
        job.id, JobFailure(lease_id=lease.lease_id, error="bad runtime", retryable=False)
    )
    assert (failed.status, failed.attempts) == ("failed", 1)
    retried = c.client.retry_job(job.id)
    assert (retried.status, retried.attempts, retried.error) == ("queued", 0, None)
    # the same job is measured again and its result counts
    lease = _lease(agent, job)
    assert agent.post_result(job.id, result_for(lease, SAMPLES)).valid
    assert c.client.get_job(job.id).status == "done"
    # a cancelled job can be retried too
    other = _queued(c, env["model"].id)
    c.client.cancel_job(other.id)
    assert c.client.retry_job(other.id).status == "queued"
    c.client.cancel_job(other.id)  # leave nothing queued


def test_rerun_makes_a_new_job_with_the_same_settings(env: dict[str, Any]) -> None:
    c, agent = env["c"], env["agent"]
    protocol = {"warmup_ms": 5.0, "min_time_ms": 10.0, "cooldown_s": 0.5, "affinity": "all"}
    (job,) = c.client.create_jobs(
        env["model"].id,
        "native",
        [2],
        runs=4,
        warmup=2,
        device_id=env["reg"].device_id,
        protocol=protocol,
    )
    lease = _lease(agent, job)
    agent.post_result(job.id, result_for(lease, SAMPLES + [10.05]))
    new = c.client.rerun_job(job.id)
    assert new.id != job.id and new.status == "queued" and new.attempts == 0
    same = ("model_id", "artifact_id", "library", "threads", "device_id", "warmup", "runs")
    assert {k: getattr(new, k) for k in same} == {k: getattr(job, k) for k in same}
    assert new.protocol == job.protocol and new.protocol is not None
    assert new.protocol.affinity == "all"
    assert c.client.get_job(job.id).status == "done"  # the old job and its result stay
    assert len(c.client.results(job_id=job.id)) == 1
    c.client.cancel_job(new.id)


def test_actions_refused_in_the_wrong_state(env: dict[str, Any]) -> None:
    c = env["c"]
    done = next(j for j in c.client.list_jobs(status="done"))
    _conflict(lambda: c.client.cancel_job(done.id), "is done", "only waiting, queued or leased")
    _conflict(lambda: c.client.retry_job(done.id), "is done", "re-run a done job instead")
    queued = _queued(c, env["model"].id)
    _conflict(lambda: c.client.retry_job(queued.id), "is queued")
    c.client.cancel_job(queued.id)
    _conflict(lambda: c.client.cancel_job(queued.id), "is cancelled")
    with pytest.raises(ApiError) as exc:
        c.client.cancel_job(99999)
    assert exc.value.status_code == 404 and exc.value.detail == "job 99999 not found"
    with pytest.raises(ApiError) as exc:
        env["agent"].cancel_job(done.id)  # an agent token may not
    assert exc.value.status_code == 403


def test_retry_refused_while_the_artifact_failed(env: dict[str, Any], tmp_path: Path) -> None:
    c = env["c"]
    # an op the converters refuse: the native artifact fails, its jobs fail with it
    bad = c.client.upload_model(make_tiny_onnx(tmp_path / "odd.onnx", "bnn", 7, extra_op="Erf"))
    (job,) = c.client.create_jobs(bad.id, "native", [1], runs=3)
    (job,) = c.client.wait_jobs([job.id], timeout=120)
    assert job.status == "failed" and "artifact conversion failed" in (job.error or "")
    detail = _conflict(lambda: c.client.retry_job(job.id), "failed to convert")
    assert f"/artifacts/{job.artifact_id}/retry" in detail
    _conflict(lambda: c.client.rerun_job(job.id), "failed to convert")

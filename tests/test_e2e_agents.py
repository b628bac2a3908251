"""End to end: the real coordinator (uvicorn subprocess, SQLite) and real agent processes
(`bnnbench agent`), a real ONNX upload converted by the coordinator, the real native engine.

Waits poll the API or the agents' logs with generous deadlines; nothing asserts a duration.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import make_tiny_onnx
from helpers.agents import AgentProcess, ctx_of, result_rows, wait_jobs, wait_until
from helpers.onnx_builder import make_slow_onnx

from bnnbench.http import ApiError
from bnnbench.schemas import JobOut, ModelOut
from native import engine

pytestmark = pytest.mark.slow  # real processes, seconds each: not for the inner loop

# ~20 ms per inference on one idle core: a job of SLOW_RUNS lasts seconds, long enough to be
# observed "leased" and interrupted, short enough to be run again by another agent
SLOW_RUNS = 120


# ------------------------------------------------------------------ helpers


@pytest.fixture(scope="module", autouse=True)
def _built_engine() -> None:
    engine.version()  # build libbnn.so once here, not concurrently in several agents


@pytest.fixture(scope="module")
def slow_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_slow_onnx(tmp_path_factory.mktemp("models") / "slow_fp32.onnx")


# ------------------------------------------------------------------ scenarios


def test_two_agents_run_all_jobs_and_a_killed_agents_job_is_finished_by_the_other(
    coordinator_factory: Any,
    agents: Callable[..., AgentProcess],
    tiny_onnx: Path,
    slow_onnx: Path,
) -> None:
    coordinator = coordinator_factory()
    client = coordinator.client
    alpha, beta = agents(coordinator, "alpha"), agents(coordinator, "beta")
    ctx = ctx_of(coordinator, alpha, beta)
    by_id = {alpha.agent_id: alpha, beta.agent_id: beta}

    model = client.upload_model(tiny_onnx)
    jobs = client.create_jobs(model.id, "native", threads=[1, 2], warmup=1, runs=5)
    final = wait_jobs(client, [j.id for j in jobs], ctx)
    assert [j.status for j in final] == ["done", "done"], [j.error for j in final]
    [artifact] = [a for a in client.model_artifacts(model.id) if a.library == "native"]
    for job in final:
        [res] = client.results(job_id=job.id)
        assert len(res.samples_ms) == 5 and all(s > 0 for s in res.samples_ms)
        assert res.threads == job.threads
        assert res.artifact_sha256 == artifact.sha256
        assert res.runtime_version == engine.version()
        assert res.env["agent"]["id"] in by_id
        assert res.env["runner"]["output_finite"] is True
        assert res.env["threads"] == job.threads and "loadavg" in res.env["readings_before"]

    # a slow job; the agent holding it is killed -9 mid-run
    slow = client.upload_model(slow_onnx)
    [job] = client.create_jobs(slow.id, "native", threads=[1], warmup=0, runs=SLOW_RUNS)
    leased = wait_until(
        lambda: (j := client.get_job(job.id)).status == "leased" and j,
        "the slow job to be leased",
        context=ctx,
    )
    holder = by_id[leased.leased_by]
    other = beta if holder is alpha else alpha
    holder.kill9()

    [done] = wait_jobs(client, [job.id], ctx)
    assert done.status == "done", done.error
    assert done.attempts == 1  # the expired lease
    [(agent_id, samples)] = result_rows(coordinator, job.id)
    assert agent_id == other.agent_id
    assert len(json.loads(samples)) == SLOW_RUNS
    [res] = client.results(job_id=job.id)
    assert res.env["agent"]["name"] == other.name
    [(history,)] = coordinator.query("SELECT history FROM jobs WHERE id = ?", job.id)
    events = [(e["event"], e.get("agent")) for e in json.loads(history)]
    assert events[0] == ("leased", holder.agent_id)
    assert ("lease expired", None) in events
    assert ("leased", other.agent_id) in events and events[-1] == ("done", other.agent_id)


Outage = tuple[Any, AgentProcess, JobOut, ModelOut, Callable[[], str]]


@pytest.fixture
def outage_during_a_job(
    coordinator_factory: Callable[..., Any],
    agents: Callable[..., AgentProcess],
    slow_onnx: Path,
) -> Callable[..., Outage]:
    """A slow job of agent ``name`` whose run finishes while the coordinator is away (stopped,
    or killed -9 with ``crash``): the agent retries posting its result. The lease outlasts the
    outage: the kept result must be accepted as is."""

    def start(name: str, *, crash: bool) -> Outage:
        coord = coordinator_factory(lease_seconds=60)
        model = coord.client.upload_model(slow_onnx)
        agent = agents(coord, name)
        ctx = ctx_of(coord, agent)
        [job] = coord.client.create_jobs(model.id, "native", threads=[1], warmup=0, runs=SLOW_RUNS)
        agent.wait_log(f"running job {job.id}")
        if crash:
            coord.kill()  # the lease was committed: SQLite keeps it
        else:
            coord.stop()
        agent.wait_log(f"/jobs/{job.id}/result: coordinator unreachable")
        return coord, agent, job, model, ctx

    return start


def _measured_once(coord: Any, job: JobOut, ctx: Callable[[], str]) -> None:
    """The kept result was accepted for the first lease: one result, every sample."""
    [done] = wait_jobs(coord.client, [job.id], ctx)
    assert done.status == "done" and done.attempts == 0
    [res] = coord.client.results(job_id=job.id)
    assert len(res.samples_ms) == SLOW_RUNS


def test_coordinator_restart_during_a_job_keeps_the_measurement(
    outage_during_a_job: Callable[..., Outage],
) -> None:
    coord, agent, job, model, ctx = outage_during_a_job("gamma", crash=False)
    # the result is on disk while it is retried
    assert [p.name for p in agent.outbox()] == [f"job-{job.id}.json"]
    coord.start()
    _measured_once(coord, job, ctx)
    wait_until(lambda: agent.outbox() == [], "the outbox to empty", context=ctx)

    # and the same agent process keeps taking work
    client = coord.client
    [job2] = client.create_jobs(model.id, "native", threads=[2], warmup=0, runs=3)
    [done2] = wait_jobs(client, [job2.id], ctx)
    assert done2.status == "done"
    assert agent.proc is not None and agent.proc.poll() is None


def test_result_survives_an_agent_stopped_during_an_outage(
    outage_during_a_job: Callable[..., Outage],
    agents: Callable[..., AgentProcess],
) -> None:
    coord, first, job, _, ctx = outage_during_a_job("delta", crash=True)
    first.signal(signal.SIGTERM)
    assert first.wait_exit() == 0
    assert "result kept in" in first.log()
    [kept] = first.outbox()

    coord.start()
    second = agents(coord, "delta", "--exit-when-idle", "1")  # same name and cache dir
    assert second.wait_exit() == 0
    assert "re-posting kept result of job" in second.log()
    assert not kept.exists()
    _measured_once(coord, job, ctx)


def test_corrupted_artifact_is_reported_and_nothing_else_is_harmed(
    coordinator_factory: Callable[..., Any],
    agents: Callable[..., AgentProcess],
    tiny_onnx: Path,
    tmp_path: Path,
) -> None:
    coord = coordinator_factory(max_attempts=2)
    client = coord.client
    agent = agents(coord, "epsilon")
    ctx = ctx_of(coord, agent)

    good = client.upload_model(tiny_onnx)
    [j1] = client.create_jobs(good.id, "native", threads=[1], warmup=0, runs=3)
    assert wait_jobs(client, [j1.id], ctx)[0].status == "done"
    good_sha = client.get_artifact(j1.artifact_id).sha256
    cached_good = agent.cache_dir / "artifacts" / good_sha
    assert cached_good.is_file()

    # a second model whose converted artifact gets damaged on the coordinator's disk; its
    # conversion is triggered by a job for another device, which this agent does not lease
    elsewhere, _ = coord.register_agent("elsewhere", hostname="elsewhere")
    other = client.upload_model(make_tiny_onnx(tmp_path / "other.onnx", "react", seed=3))
    [parked] = client.create_jobs(other.id, "native", threads=[1], device_id=elsewhere.device_id)
    artifact = client.wait_artifact(parked.artifact_id)
    assert artifact.status == "ready"
    blob = coord.data_dir / "blobs" / artifact.sha256[:2] / artifact.sha256
    original = blob.read_bytes()
    damaged = bytearray(original)
    damaged[len(damaged) // 2] ^= 0xFF
    os.chmod(blob, 0o644)
    blob.write_bytes(bytes(damaged))

    # the coordinator re-hashes the blob it serves: the damage is found before any byte
    # leaves, the blob is quarantined and converted again, and the job waits without losing
    # an attempt, then runs on the fresh artifact
    [bad] = client.create_jobs(other.id, "native", threads=[2], warmup=0, runs=3)
    [done] = wait_jobs(client, [bad.id], ctx)
    assert done.status == "done" and done.attempts == 0, done.error
    assert blob.read_bytes() == original  # converted again to the same bytes
    assert len(list((coord.data_dir / "quarantine").iterdir())) == 1
    files = sorted(p.name for p in (agent.cache_dir / "artifacts").iterdir())
    assert files == sorted([good_sha, artifact.sha256])
    good_blob = coord.data_dir / "blobs" / good_sha[:2] / good_sha
    assert cached_good.read_bytes() == good_blob.read_bytes()

    # the coordinator refuses thread counts the engine cannot run, naming the limit
    with pytest.raises(ApiError) as refused:
        client.create_jobs(good.id, "native", threads=[32], warmup=0, runs=3)
    assert refused.value.status_code == 422 and "between 1 and 16" in refused.value.detail
    # a runner failure is reported too: a job queued before that limit (an older coordinator
    # accepted up to 256 threads) is refused by the engine; the agent says so and the job
    # fails at once (the failure is not retryable). Parked on the other device until changed.
    [t32] = client.create_jobs(
        good.id, "native", threads=[1], warmup=0, runs=3, device_id=elsewhere.device_id
    )
    coord.query("UPDATE jobs SET threads = 32, device_id = NULL WHERE id = ?", t32.id)
    [too_many] = wait_jobs(client, [t32.id], ctx)
    assert too_many.status == "failed" and too_many.attempts == 1
    assert "native engine runs 1-16 threads, the job asks for 32" in too_many.error

    # the agent carries on with intact artifacts
    [j3] = client.create_jobs(good.id, "native", threads=[2], warmup=0, runs=3)
    assert wait_jobs(client, [j3.id], ctx)[0].status == "done"
    # with the blob repaired the same artifact runs: nothing damaged was cached
    blob.write_bytes(original)
    [j4] = client.create_jobs(other.id, "native", threads=[2], warmup=0, runs=3)
    assert wait_jobs(client, [j4.id], ctx)[0].status == "done"
    assert (agent.cache_dir / "artifacts" / artifact.sha256).read_bytes() == original


def test_configuration_errors_stop_the_agent_with_a_clear_message(
    coordinator: Any, agents: Callable[..., AgentProcess]
) -> None:
    wrong = agents(coordinator, "zeta", token="not-the-admin-token")
    assert wrong.wait_exit() == 2
    assert "rejected the enrolment token" in wrong.log()
    assert "Traceback" not in wrong.log()
    assert coordinator.query("SELECT COUNT(*) FROM agents") == [(0,)]

    none = agents(coordinator, "zeta", token="")
    assert none.wait_exit() == 2
    assert "no enrolment token" in none.log()

    # two agents on one cache dir would share (and fight over) one identity
    first = agents(coordinator, "kappa")
    first.wait_log("registered as agent")
    second = agents(coordinator, "kappa")
    assert second.wait_exit() == 2
    assert "is in use by another agent" in second.log()
    assert first.proc is not None and first.proc.poll() is None


def test_identity_is_reused_and_a_rejected_agent_token_leads_to_reregistration(
    coordinator: Any, agents: Callable[..., AgentProcess], tiny_onnx: Path
) -> None:
    first = agents(coordinator, "eta", "--exit-when-idle", "0.5")
    assert first.wait_exit() == 0
    ident = first.identity()
    assert "registered as agent" in first.log()

    second = agents(coordinator, "eta", "--exit-when-idle", "0.5")
    assert second.wait_exit() == 0
    assert second.identity() == ident
    assert f"reusing identity: agent {ident['agent_id']}" in second.log()

    # the coordinator no longer knows the stored token (e.g. its database was restored from
    # a backup, which also holds an old last_seen: a live agent's name would be refused)
    path = first.cache_dir / "agent.json"
    path.write_text(json.dumps({**ident, "token": "revoked-token"}))
    coordinator.query(
        "UPDATE agents SET last_seen = '2000-01-01 00:00:00' WHERE id = ?", ident["agent_id"]
    )
    model = coordinator.client.upload_model(tiny_onnx)
    [job] = coordinator.client.create_jobs(model.id, "native", threads=[1], warmup=0, runs=2)
    third = agents(coordinator, "eta", "--once")
    assert third.wait_exit() == 0
    assert "rejected this agent's token; registering again" in third.log()
    new = json.loads(path.read_text())
    assert new["token"] not in ("revoked-token", ident["token"])
    assert new["agent_id"] == ident["agent_id"]  # same name on the same device: same agent
    assert coordinator.client.get_job(job.id).status == "done"


def test_sigterm_when_idle_exits_and_during_a_job_finishes_it_first(
    coordinator: Any, agents: Callable[..., AgentProcess], slow_onnx: Path
) -> None:
    idle = agents(coordinator, "theta")
    idle.wait_log("registered as agent")
    idle.signal(signal.SIGTERM)  # in the middle of a long-poll
    assert idle.wait_exit() == 0

    client = coordinator.client
    model = client.upload_model(slow_onnx)
    busy = agents(coordinator, "iota")
    ctx = ctx_of(coordinator, busy)
    [job] = client.create_jobs(model.id, "native", threads=[1], warmup=0, runs=SLOW_RUNS)
    busy.wait_log(f"running job {job.id}")
    busy.signal(signal.SIGTERM)
    assert busy.wait_exit() == 0
    assert f"finishing job {job.id}, then exiting" in busy.log()
    job_now = client.get_job(job.id)
    assert job_now.status == "done" and job_now.attempts == 0
    assert len(client.results(job_id=job.id)[0].samples_ms) == SLOW_RUNS
    assert busy.outbox() == []

    # a second signal abandons the job: the lease expires and the job is queued again
    quitter = agents(coordinator, "lambda")
    ctx = ctx_of(coordinator, quitter)
    [job] = client.create_jobs(model.id, "native", threads=[2], warmup=0, runs=SLOW_RUNS)
    quitter.wait_log(f"running job {job.id}")
    quitter.signal(signal.SIGTERM)
    quitter.wait_log(f"finishing job {job.id}")
    quitter.signal(signal.SIGTERM)
    assert quitter.wait_exit() == 0
    assert f"abandoning job {job.id}" in quitter.log()
    requeued = wait_until(
        lambda: (j := client.get_job(job.id)).status == "queued" and j,
        "the abandoned job to be requeued",
        context=ctx,
    )
    assert requeued.attempts == 1 and "lease expired" in requeued.error
    assert client.results(job_id=job.id) == []

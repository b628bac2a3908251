"""The lease protocol over raw HTTP, as an agent speaks it: register, long-poll lease,
heartbeat, expiry and requeue, stale leases, failure reports, max attempts."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import CoordinatorProcess, wait_for
from helpers.campaign import module_coordinator

API = "/api/v1"

DEVICE = {
    "hostname": "board",
    "arch": "aarch64",
    "os": "Linux 6.1",
    "cpu_model": "Cortex-A72",
    "cores": 4,
    "isa_flags": ["neon"],
    "transport": "ssh",
}


class RawAgent:
    """An agent built on nothing but httpx and the documented endpoints."""

    def __init__(
        self, c: CoordinatorProcess, name: str, *, replace: bool = False, **device: Any
    ) -> None:
        self.base = c.url + API
        body = {
            "name": name,
            "device": {**DEVICE, "hostname": f"board-{name}", **device},
            "runtimes": {"native": "0.1.0"},
            "replace": replace,
        }
        r = httpx.post(
            f"{self.base}/agents/register",
            json=body,
            headers={"Authorization": f"Bearer {c.admin_token}"},
        )
        assert r.status_code == 200, r.text
        self.reg = r.json()
        self.http = httpx.Client(
            base_url=self.base,
            headers={"Authorization": f"Bearer {self.reg['token']}"},
            timeout=60,
        )

    def lease(self, wait: float = 0) -> httpx.Response:
        return self.http.post("/agents/lease", params={"wait": wait})

    def heartbeat(self, job_id: int | None) -> httpx.Response:
        return self.http.post("/agents/heartbeat", json={"job_id": job_id})

    def result(self, job_id: int, lease_id: str, samples: list[float]) -> httpx.Response:
        return self.http.post(
            f"/jobs/{job_id}/result",
            json={
                "lease_id": lease_id,
                "samples_ms": samples,
                "runtime_version": "native 0.1.0",
                "env": {"governor": "performance"},
            },
        )

    def fail(
        self, job_id: int, lease_id: str, error: str, retryable: bool = True
    ) -> httpx.Response:
        return self.http.post(
            f"/jobs/{job_id}/fail",
            json={"lease_id": lease_id, "error": error, "retryable": retryable},
        )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CoordinatorProcess]:
    """One coordinator for the tests below: each registers agents of its own and binds its
    jobs to their devices, so no test leases another's job."""
    # leases long enough never to expire by accident on a loaded machine
    settings = {"lease_seconds": 60, "max_attempts": 2, "max_remeasures": 2}
    with module_coordinator(tmp_path_factory, "test-admin-token", **settings) as c:
        yield c


def _queued_job(
    c: CoordinatorProcess, model_path: Path, threads: list[int], device_id: int | None = None
) -> list[int]:
    m = c.client.upload_model(model_path)
    jobs = c.client.create_jobs(m.id, "native", threads, device_id=device_id, warmup=1, runs=3)
    ids = [j.id for j in jobs]
    c.client.wait_jobs(ids, until=lambda j: j.status == "queued", timeout=60)
    return ids


def _ts(s: str) -> datetime:
    return datetime.fromisoformat(s)


def test_lease_heartbeat_expiry_and_stale_results(
    coordinator_factory: Any, tiny_onnx: Path
) -> None:
    c = coordinator_factory(lease_seconds=2, reaper_interval_seconds=0.2)
    a, b = RawAgent(c, "a"), RawAgent(c, "b")
    assert a.reg["device_id"] != b.reg["device_id"]
    assert a.lease().status_code == 204  # nothing queued yet
    (job_id,) = _queued_job(c, tiny_onnx, [1])

    r = a.lease(wait=5)
    assert r.status_code == 200, r.text
    first = r.json()
    assert first["job_id"] == job_id and first["threads"] == 1 and first["runs"] == 3
    art = first["artifact"]
    assert art["download_url"] == f"{API}/artifacts/{art['id']}/download"
    dl = a.http.get(art["download_url"].removeprefix(API))
    assert dl.status_code == 200 and dl.headers["X-Content-SHA256"] == art["sha256"]
    assert b.lease(wait=0).status_code == 204  # only one job, and it is taken

    hb = a.heartbeat(job_id)
    assert hb.status_code == 200 and hb.json()["ok"] is True
    assert _ts(hb.json()["lease_extended_until"]) > _ts(first["lease_expires_at"])
    assert a.heartbeat(None).json()["lease_extended_until"] is None
    r = b.heartbeat(job_id)  # not b's job
    assert r.status_code == 409 and "not leased by this agent" in r.json()["detail"]

    # a stops heartbeating: the lease expires, the job is requeued and b's long poll gets it
    r = b.lease(wait=10)
    assert r.status_code == 200, r.text
    second = r.json()
    assert second["job_id"] == job_id and second["lease_id"] != first["lease_id"]
    job = c.client.get_job(job_id)
    assert job.status == "leased" and job.attempts == 1 and job.leased_by == b.reg["agent_id"]

    # a comes back late: its result and heartbeats are refused, nothing is recorded
    r = a.result(job_id, first["lease_id"], [5.0, 5.0, 5.0])
    assert r.status_code == 409 and "stale lease" in r.json()["detail"]
    assert a.heartbeat(job_id).status_code == 409
    r = a.fail(job_id, first["lease_id"], "late failure")
    assert r.status_code == 409
    assert c.query("SELECT count(*) FROM results") == [(0,)]
    assert c.client.get_job(job_id).leased_by == b.reg["agent_id"]

    r = b.result(job_id, second["lease_id"], [2.02, 1.98, 2.0])
    assert r.status_code == 200, r.text
    res = r.json()
    assert res["stats"]["median_ms"] == 2.0 and res["stats"]["n"] == 3
    assert res["valid"] is True and res["verdict"].startswith("ok")
    assert res["artifact_sha256"] == art["sha256"] and res["threads"] == 1
    assert res["device_fingerprint"].startswith("board-b|aarch64|Cortex-A72")
    assert res["env"] == {"governor": "performance"}
    assert c.client.get_job(job_id).status == "done"
    # the same post again (its answer lost on the way) gets the same result back ...
    again = b.result(job_id, second["lease_id"], [2.02, 1.98, 2.0])
    assert again.status_code == 200 and again.json()["id"] == res["id"], again.text
    # ... other samples under the finished lease are refused
    assert b.result(job_id, second["lease_id"], [1.0, 1.0, 1.0]).status_code == 409
    assert c.query("SELECT count(*) FROM results") == [(1,)]


def test_expired_max_attempts_fails_the_job(coordinator_factory: Any, tiny_onnx: Path) -> None:
    c = coordinator_factory(lease_seconds=0.8, max_attempts=2, reaper_interval_seconds=0.2)
    a, b = RawAgent(c, "a"), RawAgent(c, "b")
    (job_id,) = _queued_job(c, tiny_onnx, [1])
    assert a.lease(wait=5).json()["job_id"] == job_id
    assert b.lease(wait=10).json()["job_id"] == job_id  # after a's lease expired
    # b never reports either
    job = wait_for(
        lambda: (j := c.client.get_job(job_id)).status == "failed" and j,
        timeout=30,
        what="job failure",
    )
    assert job.attempts == 2
    assert job.error == "lease expired 2 times (max_attempts=2)"
    assert a.lease(wait=0).status_code == 204


def test_failure_reports_requeue_or_fail(server: CoordinatorProcess, tiny_onnx: Path) -> None:
    c = server  # max_attempts=2
    a = RawAgent(c, "failing")
    j1, j2 = _queued_job(c, tiny_onnx, [1, 2], a.reg["device_id"])
    lease = a.lease().json()
    assert lease["job_id"] == j1  # oldest first
    r = a.fail(j1, lease["lease_id"], "device busy")
    assert r.status_code == 200 and r.json()["status"] == "queued"
    assert r.json()["attempts"] == 1 and "device busy" in r.json()["error"]
    lease = a.lease().json()
    assert lease["job_id"] == j1  # requeued jobs keep their place
    r = a.fail(j1, lease["lease_id"], "device busy again")
    assert r.json()["status"] == "failed" and "device busy again" in r.json()["error"]

    lease = a.lease().json()
    assert lease["job_id"] == j2
    r = a.fail(j2, lease["lease_id"], "runtime rejects the model", retryable=False)
    assert r.json()["status"] == "failed" and r.json()["attempts"] == 1
    assert "runtime rejects the model" in r.json()["error"]
    assert a.lease().status_code == 204


def test_bad_results_are_refused_and_invalid_ones_flagged(
    server: CoordinatorProcess, tiny_onnx: Path
) -> None:
    c = server
    a = RawAgent(c, "reporting")
    j1, j2 = _queued_job(c, tiny_onnx, [1, 2], a.reg["device_id"])
    lease = a.lease().json()
    for bad in ([], [1.0, -2.0], [1.0, float("nan")]):
        body = {"lease_id": lease["lease_id"], "samples_ms": bad, "runtime_version": "x"}
        r = a.http.post(
            f"/jobs/{j1}/result",
            content=json.dumps(body),  # NaN as JS does
            headers={"Content-Type": "application/json"},
        )
        assert r.status_code == 422, (bad, r.text)
    assert c.client.get_job(j1).status == "leased"
    # fewer samples than requested runs: stored, but flagged invalid
    r = a.result(j1, lease["lease_id"], [1.0])
    assert r.status_code == 200 and r.json()["valid"] is False
    assert "1 of 3 requested runs" in r.json()["verdict"]
    # an invalid result is kept as the attempt's record and the job is measured again with
    # twice the runs, after a pause (max_remeasures times)
    job = c.client.get_job(j1)
    assert job.status == "queued" and job.runs == 6 and job.remeasures == 1
    assert job.protocol is not None and job.protocol.cooldown_s > 0
    assert "re-measuring (1/2)" in (job.error or "")
    assert [x.valid for x in c.client.results(job_id=j1)] == [False]


def test_long_poll_wakes_when_a_job_is_queued(server: CoordinatorProcess, tiny_onnx: Path) -> None:
    c = server
    a = RawAgent(c, "waiting")
    here = a.reg["device_id"]
    m = c.client.upload_model(tiny_onnx)
    (first,) = c.client.create_jobs(m.id, "native", [1], device_id=here)
    c.client.wait_artifact(first.artifact_id)
    assert a.lease().json()["job_id"] == first.id  # take the only job

    got: dict[str, httpx.Response] = {}
    waiting = threading.Thread(target=lambda: got.setdefault("r", a.lease(wait=10)))
    waiting.start()
    (new,) = c.client.create_jobs(m.id, "native", [2], device_id=here)  # ready: queued at once
    assert new.status == "queued"
    waiting.join()
    assert got["r"].status_code == 200 and got["r"].json()["job_id"] == new.id


def test_device_filter(server: CoordinatorProcess, tiny_onnx: Path) -> None:
    c = server
    a, b = RawAgent(c, "filter-a"), RawAgent(c, "filter-b")
    m = c.client.upload_model(tiny_onnx)
    (job,) = c.client.create_jobs(m.id, "native", [1], device_id=b.reg["device_id"])
    c.client.wait_jobs([job.id], until=lambda j: j.status == "queued", timeout=60)
    assert a.lease().status_code == 204
    assert b.lease().json()["job_id"] == job.id
    # the admin replacing the agent of a name on a device keeps the agent id and rotates the
    # token; the job it leased goes back to the queue (tests/test_security.py: without
    # replace, a live agent's name is refused)
    again = RawAgent(c, "filter-b", replace=True)
    assert again.reg["agent_id"] == b.reg["agent_id"]
    assert b.heartbeat(None).status_code == 401
    assert again.heartbeat(job.id).status_code == 409
    assert again.lease().json()["job_id"] == job.id

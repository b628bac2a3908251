"""Prometheus metrics at /metrics (coordinator/telemetry.py), scraped from real coordinator
processes: queue depth and job outcomes follow the jobs through waiting, queued, leased,
done, failed and cancelled; the lease route's latency histogram counts each lease; the
output parses as Prometheus text (and OpenMetrics when asked); random URLs add no label
values; two processes on one database report the same counts; metrics_token guards it."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ADMIN_TOKEN, CoordinatorProcess, result_for, wait_for
from helpers.campaign import module_coordinator
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from bnnbench.schemas import API_PREFIX, Endpoint, JobFailure
from coordinator import telemetry

LEASE = API_PREFIX + Endpoint.AGENT_LEASE
DURATION = "bnnbench_http_request_duration_seconds"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
WEBDAV = ("PROPFIND", "PROPPATCH", "MKCOL", "LOCK", "UNLOCK")


SECRET = "prometheus-scrape-7f3a9c"  # the metrics token of the shared coordinator


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CoordinatorProcess]:
    """One coordinator for the cheap tests, with metrics_token set."""
    with module_coordinator(tmp_path_factory, ADMIN_TOKEN, metrics_token=SECRET) as c:
        yield c


def scrape(c: CoordinatorProcess, token: str | None = None) -> Samples:
    """Every sample of /metrics, parsed by prometheus_client's own text parser."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = httpx.get(f"{c.url}/metrics", headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4"), r.headers
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when the series does not exist yet."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def queue(samples: Samples) -> dict[str, float]:
    """Queue depth and outcomes by job status, as the metrics show them."""
    out = {s: value(samples, "bnnbench_queue_depth", status=s) for s in telemetry.QUEUE_STATUSES}
    for s in telemetry.OUTCOME_STATUSES:
        out[s] = value(samples, "bnnbench_jobs_finished", outcome=s)
    return out


def counts(c: CoordinatorProcess) -> dict[str, float]:
    """The same counts straight from the database file."""
    rows = dict(c.query("SELECT status, count(*) FROM jobs GROUP BY status"))
    return {s.value: float(rows.get(s.value, 0)) for s in telemetry.QUEUE_STATUSES} | {
        s.value: float(rows.get(s.value, 0)) for s in telemetry.OUTCOME_STATUSES
    }


def leases(samples: Samples, status: str) -> float:
    return value(samples, f"{DURATION}_count", route=LEASE, method="POST", status=status)


@pytest.mark.slow  # the artifact converts in a worker before jobs can be leased
def test_queue_depth_outcomes_and_lease_latency(
    coordinator_factory: Callable[..., CoordinatorProcess], tiny_onnx: Path
) -> None:
    c = coordinator_factory(conversion_workers=0)  # the jobs wait until conversions start
    model = c.client.upload_model(tiny_onnx)
    reg, _ = c.register_agent("metered")
    jobs = c.client.create_jobs(model.id, "native", [1, 2], runs=3, device_id=reg.device_id)
    m = scrape(c)
    assert queue(m) == counts(c) == {**dict.fromkeys(queue(m), 0.0), "waiting": 2.0}
    assert value(m, "bnnbench_artifacts", status="pending") == 1
    assert value(m, "bnnbench_model_analyses", status="pending") == 1
    # every label value of a family is there from the start, at zero
    assert value(m, "bnnbench_jobs_finished", outcome="done") == 0
    assert ("bnnbench_queue_depth", frozenset({("status", "leased")})) in m

    c.restart(conversion_workers=1)
    agent = c.make_client(reg.token)  # the restart closed the clients
    ids = [j.id for j in jobs]
    c.client.wait_jobs(ids, timeout=120, until=lambda j: j.status == "queued")
    before = scrape(c)
    assert queue(before)["queued"] == 2 and queue(before) == counts(c)
    assert value(before, "bnnbench_artifacts", status="ready") == 1

    lease = wait_for(lambda: agent.lease(wait=2), timeout=60, what="a lease")
    after = scrape(c)
    assert queue(after) == counts(c)
    assert queue(after)["leased"] == 1 and queue(after)["queued"] == 1
    # one more lease answered 200 (the scrapes in between are not leases)
    assert leases(after, "200") == leases(before, "200") + 1
    assert value(after, f"{DURATION}_bucket", route=LEASE, method="POST", status="200", le="+Inf")
    assert value(after, f"{DURATION}_sum", route=LEASE, method="POST", status="200") > 0

    # the outcomes: one done, one cancelled, then one failed for good
    agent.post_result(lease.job_id, result_for(lease, [10.0, 10.05, 9.95]))
    (other,) = [i for i in ids if i != lease.job_id]
    c.client.cancel_job(other)
    (third,) = c.client.create_jobs(model.id, "native", [1], runs=3, device_id=reg.device_id)
    failing = wait_for(lambda: agent.lease(wait=2), timeout=60, what="the third lease")
    assert failing.job_id == third.id
    agent.post_failure(third.id, JobFailure(lease_id=failing.lease_id, error="x", retryable=False))
    end = scrape(c)
    assert queue(end) == counts(c)
    assert queue(end) == {
        "waiting": 0.0,
        "queued": 0.0,
        "leased": 0.0,
        "done": 1.0,
        "failed": 1.0,
        "cancelled": 1.0,
    }
    assert leases(end, "200") == leases(before, "200") + 2
    # the result and failure reports are timed under their templates, not their URLs
    for endpoint in (Endpoint.JOB_RESULT, Endpoint.JOB_FAILURE):
        route = API_PREFIX + endpoint
        assert value(end, f"{DURATION}_count", route=route, method="POST", status="200") == 1
    routes = {dict(k[1])["route"] for k in end if k[0] == f"{DURATION}_count"}
    assert not [r for r in routes if any(f"/{i}/" in f"{r}/" for i in [*ids, third.id])], routes
    # the native conversion this process ran after the restart was timed
    r = httpx.get(f"{c.url}/metrics", timeout=30)
    assert "# TYPE bnnbench_conversion_seconds histogram" in r.text
    done = value(end, "bnnbench_conversion_seconds_count", library="native", outcome="ok")
    assert done == 1, done


def test_random_urls_add_no_label_values(guarded: CoordinatorProcess) -> None:
    c = guarded
    r = random.Random(14)
    words = [f"x{r.getrandbits(64):016x}" for _ in range(200)]
    before = scrape(c, SECRET)
    with httpx.Client(base_url=c.url, timeout=30) as http:
        for i, word in enumerate(words):
            # unknown paths, deep ones, odd methods; ids in a known template stay that template
            if i % 4 == 0:
                resp = http.get(f"/{word}")
            elif i % 4 == 1:
                resp = http.get(f"/{word}/{word}/{i}?q={word}")
            elif i % 4 == 2:  # methods the HTTP parser passes on but no route knows
                resp = http.request(r.choice(WEBDAV), f"/api/v1/{word}")
            else:
                resp = http.get(f"{API_PREFIX}/jobs/{r.getrandbits(40)}")
            assert resp.status_code in (401, 404, 405), (i, resp.status_code)
    auth = {"Authorization": f"Bearer {SECRET}"}
    text = httpx.get(f"{c.url}/metrics", headers=auth, timeout=30).text
    after = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert not [w for w in words if w in text]  # no URL part became a label value
    new = {dict(k[1])["route"] for k in after.keys() - before.keys() if k[0] == f"{DURATION}_count"}
    assert new <= {telemetry.UNMATCHED, f"{API_PREFIX}/jobs/{{job_id}}", "/metrics"}, new
    unmatched = value(after, f"{DURATION}_count", route="unmatched", method="GET", status="404")
    was = value(before, f"{DURATION}_count", route="unmatched", method="GET", status="404")
    assert unmatched - was == 100  # the unknown GETs, one bucket
    # methods outside the HTTP verbs share one label value
    odd = value(after, f"{DURATION}_count", route="unmatched", method="other", status="404")
    assert odd == 50
    # ids under a known template: that template (401: these carried no token)
    job_401 = {"route": f"{API_PREFIX}/jobs/{{job_id}}", "method": "GET", "status": "401"}
    assert value(after, f"{DURATION}_count", **job_401) == 50


def test_openmetrics_when_asked(guarded: CoordinatorProcess) -> None:
    headers = {"Accept": "application/openmetrics-text; version=1.0.0"}
    headers["Authorization"] = f"Bearer {SECRET}"
    r = httpx.get(f"{guarded.url}/metrics", headers=headers, timeout=30)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/openmetrics-text")
    assert r.text.endswith("# EOF\n")
    names = {f.name for f in openmetrics_families(r.text)}
    assert {"bnnbench_queue_depth", "bnnbench_jobs_finished", DURATION} <= names


@pytest.mark.slow  # two coordinator processes
def test_two_processes_on_one_database_report_the_same_queue(
    coordinator_factory: Callable[..., CoordinatorProcess], tiny_onnx: Path
) -> None:
    a = coordinator_factory(conversion_workers=0)
    b = coordinator_factory(conversion_workers=0, database_url=f"sqlite:///{a.db_path}")
    model = b.client.upload_model(tiny_onnx)  # through b, counted by a
    a.client.create_jobs(model.id, "native", [1, 2, 3], runs=3)
    (job,) = a.client.create_jobs(model.id, "native", [4], runs=3)
    b.client.cancel_job(job.id)
    qa, qb = queue(scrape(a)), queue(scrape(b))  # without metrics_token: no token needed
    assert qa == qb == counts(a)
    assert qa["waiting"] == 3 and qa["cancelled"] == 1


def _status(c: CoordinatorProcess, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.get(f"{c.url}/metrics", headers=headers, timeout=30).status_code


def test_metrics_token(guarded: CoordinatorProcess) -> None:
    c = guarded
    _, agent = c.register_agent("other")
    assert _status(c, None) == 401
    assert _status(c, "wrong-token-of-some-length") == 401
    assert _status(c, agent.token) == 401  # an agent's token reads no metrics
    assert _status(c, SECRET) == 200
    assert _status(c, c.admin_token) == 200
    assert value(scrape(c, SECRET), "bnnbench_queue_depth", status="queued") == 0


@pytest.mark.slow  # a coordinator process starting (and refusing)
def test_a_weak_metrics_token_refuses_to_start(
    coordinator_factory: Callable[..., CoordinatorProcess],
) -> None:
    with pytest.raises(RuntimeError, match="metrics_token"):
        coordinator_factory(metrics_token="short")


def test_observe_conversion_fills_the_histogram() -> None:
    def count(**labels: Any) -> float:
        name = "bnnbench_conversion_seconds_count"
        return telemetry.PROCESS_REGISTRY.get_sample_value(name, labels) or 0.0

    def bucket(le: str) -> float:
        name = "bnnbench_conversion_seconds_bucket"
        labels = {"library": "lce", "outcome": "ready", "le": le}
        return telemetry.PROCESS_REGISTRY.get_sample_value(name, labels) or 0.0

    was, was_5, was_2 = count(library="lce", outcome="ready"), bucket("5.0"), bucket("2.0")
    telemetry.observe_conversion("lce", "ready", 2.5)
    assert count(library="lce", outcome="ready") == was + 1
    assert bucket("5.0") == was_5 + 1 and bucket("2.0") == was_2  # 2.5 s: in (2, 5]
    assert count(library="lce", outcome="failed") == 0

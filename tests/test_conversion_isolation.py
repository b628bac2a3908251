"""Conversions and measurements never share cores unknowingly (coordinator.colocation), with
the real coordinator and its conversion worker: a device on the coordinator's machine waits
while conversion work is outstanding, a conversion waits while such a device measures, and a
result that a conversion overlapped anyway is flagged invalid."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import CoordinatorProcess, make_tiny_onnx, result_for, wait_for

from agent import probe
from agent.transports.local import LocalTransport
from coordinator.colocation import host_identity, on_this_host
from coordinator.models import Device

pytestmark = pytest.mark.slow  # real processes

STEADY = [5.0, 5.01, 4.99, 5.0, 5.02, 4.98]


def _ready(c: CoordinatorProcess, model_id: int, artifact_id: int) -> None:
    assert c.client.wait_artifact(artifact_id).status == "ready"
    wait_for(lambda: c.client.get_model(model_id).analysis_status == "done", what="analysis")


def test_which_devices_are_this_machine() -> None:
    # one definition: the identity the agent's own probe reports for this machine
    me = probe.probe(LocalTransport()).identity
    assert host_identity() == me
    board = Device(hostname=socket.gethostname(), attributes={"identity": "board:10000000cafe"})
    by_name = Device(hostname=socket.gethostname(), attributes={})
    other = Device(hostname="pi4", attributes={})
    assert on_this_host(by_name, "auto")
    assert not on_this_host(board, "auto") and not on_this_host(other, "auto")
    assert on_this_host(other, "all") and not on_this_host(by_name, "off")
    if me:  # a machine with no machine-id or board serial is known by its hostname only
        assert on_this_host(Device(hostname="x", attributes={"identity": me}), "auto")


def test_jobs_and_conversions_on_one_machine_take_turns(
    coordinator_factory: Callable[..., CoordinatorProcess], tmp_path: Path
) -> None:
    # "all": the test's registered devices count as this machine's
    c = coordinator_factory(conversion_isolation="all")
    client = c.client
    first = client.upload_model(make_tiny_onnx(tmp_path / "a.onnx", "bnn"))
    [job] = client.create_jobs(first.id, "native", [1], runs=6)
    _ready(c, first.id, job.artifact_id)
    _, agent = c.register_agent("here")

    # new conversion work: the queued job is held back until it is done
    second = client.upload_model(make_tiny_onnx(tmp_path / "b.onnx", "bnn", seed=1))
    [job2] = client.create_jobs(second.id, "native", [1], runs=6)
    assert agent.lease(wait=0) is None  # job is queued and the device idle: only the gate
    lease = agent.lease(wait=60)  # the long poll is woken once the work is done
    assert lease is not None and lease.job_id == job.id
    assert client.get_artifact(job2.artifact_id).status == "ready"
    assert client.get_model(second.id).analysis_status == "done"

    # while the device measures, a new model is neither analysed nor converted
    third = client.upload_model(make_tiny_onnx(tmp_path / "c.onnx", "bnn", seed=2))
    [job3] = client.create_jobs(third.id, "native", [1], runs=6)
    time.sleep(2.0)  # four of the dispatcher's polls (conversion_poll_seconds 0.5)
    assert client.get_artifact(job3.artifact_id).status == "pending"
    assert client.get_model(third.id).analysis_status == "pending"
    res = agent.post_result(lease.job_id, result_for(lease, STEADY))
    assert res.valid, res.verdict  # nothing overlapped it
    _ready(c, third.id, job3.artifact_id)


def test_a_result_a_conversion_overlapped_is_invalid(
    coordinator_factory: Callable[..., CoordinatorProcess], tmp_path: Path
) -> None:
    # "off": nothing is held back, so a conversion can overlap a measurement; the verdict
    # still flags it for a device on this machine (known here by its hostname), not others
    c = coordinator_factory(conversion_isolation="off", max_remeasures=1)
    client = c.client
    model = client.upload_model(make_tiny_onnx(tmp_path / "a.onnx", "bnn"))
    jobs = client.create_jobs(model.id, "native", [1, 2], runs=6)
    _ready(c, model.id, jobs[0].artifact_id)
    _, here = c.register_agent("here", hostname=socket.gethostname())
    _, far = c.register_agent("far", hostname="pi4")
    lease_here, lease_far = here.lease(wait=10), far.lease(wait=10)
    assert lease_here is not None and lease_far is not None

    other = client.upload_model(make_tiny_onnx(tmp_path / "b.onnx", "bnn", seed=1))
    [job2] = client.create_jobs(other.id, "native", [1], runs=6)
    wait_for(
        lambda: client.get_artifact(job2.artifact_id).status != "pending",
        what="the conversion to start",
        poll=0.02,
    )
    res = here.post_result(lease_here.job_id, result_for(lease_here, STEADY))
    assert not res.valid
    assert "shared cores:" in res.verdict and "on this machine during the run" in res.verdict
    assert client.get_job(lease_here.job_id).remeasures == 1  # measured again, later
    assert far.post_result(lease_far.job_id, result_for(lease_far, STEADY)).valid

"""The fidelity gate: an artifact whose verification failed is never benchmarked, with the real
coordinator, its conversion worker and a real agent.

The unfaithful artifact is a real one, not a planted fault: a model with ``Relu`` before a
binary conv's ``Sign``. ONNX ``Sign(0)`` is 0, so the ONNX model multiplies the many exact
zeros Relu makes by nothing; the native engine's sign(0) is +1. The native converter converts
the model, and the fidelity check (against onnxruntime, layer by layer) catches that the
artifact computes something else — what a converter bug would look like, reached through
the same worker, report and gate as every conversion. A daBNN artifact shows the other side:
its documented −1 padding deviation passes, stated in the report, not hidden.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from conftest import CoordinatorProcess, make_tiny_onnx, result_for
from helpers.agents import AgentProcess, ctx_of, wait_jobs
from helpers.onnx_builder import OnnxBuilder

from coordinator.conversion import fidelity_gate

pytestmark = pytest.mark.slow  # real processes


def dabnn_model(path: Path) -> Path:
    """FP stem 4→64, one padded 64→64 binary conv (daBNN's smallest), head."""
    rng = np.random.default_rng(3)
    b = OnnxBuilder([1, 4, 8, 8])

    def bn(y: str, c: int) -> str:
        stats = [rng.uniform(0.5, 1.5, c), rng.normal(0, 0.2, c), rng.normal(0, 0.2, c)]
        var = rng.uniform(0.5, 2.0, c)
        return b.node("BatchNormalization", [y, *(b.init(v) for v in (*stats, var))], epsilon=1e-5)

    def clip(y: str) -> str:
        return b.node("Clip", [y, b.init(-1.0), b.init(1.0)])

    y = b.node("Conv", ["input", b.init(rng.normal(0, 0.3, (64, 4, 3, 3)))], pads=[1, 1, 1, 1])
    y = clip(bn(y, 64))
    w = b.init(rng.normal(0, 0.1, (64, 64, 3, 3)))
    y = b.node("Conv", [b.node("Sign", [y]), b.node("Sign", [w])], pads=[1, 1, 1, 1])
    y = b.node("Flatten", [b.node("GlobalAveragePool", [clip(bn(y, 64))])])
    y = b.node("Gemm", [y, b.init(rng.normal(0, 0.1, (10, 64))), b.init(np.zeros(10))], transB=1)
    return b.save(path, y, props={"bnnbench.arch": "TinyDab", "bnnbench.algorithm": "bnn"})


def test_an_unfaithful_artifact_never_reaches_a_result_or_the_table(
    coordinator_factory: Callable[..., CoordinatorProcess],
    agents: Callable[..., AgentProcess],
    tmp_path: Path,
) -> None:
    c = coordinator_factory()
    client = c.client
    good = client.upload_model(make_tiny_onnx(tmp_path / "good.onnx", "bnn"))
    bad = client.upload_model(
        make_tiny_onnx(tmp_path / "relu.onnx", "bnn", seed=1, arch="ReluVGG", extra_op="Relu")
    )
    dab = client.upload_model(dabnn_model(tmp_path / "dab.onnx"))
    # the bad model's jobs first: an agent takes the oldest queued job, so without the gate
    # they would be measured before the good one is
    bad_jobs = client.create_jobs(bad.id, "native", [1, 2], warmup=1, runs=10)
    good_jobs = client.create_jobs(good.id, "native", [1], warmup=1, runs=10)
    [dab_job] = client.create_jobs(dab.id, "dabnn", [1], warmup=1, runs=10)

    art = client.wait_artifact(bad_jobs[0].artifact_id)
    assert art.status == "failed"
    assert art.error is not None and art.error.startswith("fidelity check failed: layers beyond")
    assert "/features.3/Conv" in art.error  # the binary conv fed by Relu's zeros
    # the converter's whole report stays on the artifact, for GET /artifacts/{id}
    report = client.get_artifact(art.id).report or {}
    assert report["fidelity"]["passed"] is False
    assert report["fidelity"]["layerwise"]["failed"] == ["/features.3/Conv"]
    assert report["fidelity_gate"]["passed"] is False
    assert report["library"] == "native" and report["sha256"]
    assert report["sha256"] not in {p.name for p in c.blob_files()}  # never served: not kept
    for job in client.list_jobs(ids=[j.id for j in bad_jobs]):
        assert job.status == "failed"
        assert job.error is not None and "fidelity check failed" in job.error
    # jobs asked for later fail at once, for the same reason; the file is not served
    [late] = client.create_jobs(bad.id, "native", [1])
    assert late.status == "failed" and "fidelity check failed" in (late.error or "")
    r = httpx.get(
        f"{c.url}/api/v1/artifacts/{art.id}/download",
        headers={"Authorization": f"Bearer {c.admin_token}"},
    )
    assert r.status_code == 409

    # daBNN's -1 padding: a documented deviation, passed and shown, not hidden
    dab_art = client.wait_artifact(dab_job.artifact_id)
    assert dab_art.status == "ready", dab_art.error
    gate = (dab_art.report or {})["fidelity_gate"]
    assert gate["passed"] is True
    [deviation] = gate["deviations"]
    assert "padded with -1" in deviation and "1 padded binary conv" in deviation
    assert "differs from onnxruntime by max rel err" in deviation
    assert "deviates from the ONNX model by design: binary convs padded with -1" in gate["verdict"]

    # a real agent measures whatever it may: only the faithful model gets numbers
    agent = agents(c, "local")
    [done] = wait_jobs(client, [j.id for j in good_jobs], ctx_of(c, agent))
    assert done.status == "done", done.error
    assert c.query(
        "SELECT count(*) FROM results r JOIN jobs j ON r.job_id = j.id WHERE j.model_id = ?",
        bad.id,
    ) == [(0,)]
    table = client.table()
    assert {row["arch"] for row in table["rows"]} <= {"TinyVGG", "TinyDab"}
    assert all(cell["artifact_sha256"] != report["sha256"] for cell in table["cells"])


def test_a_database_from_before_the_gate_is_gated_at_start(
    coordinator_factory: Callable[..., CoordinatorProcess], tmp_path: Path
) -> None:
    """An older version marked an artifact ready although its report said the check failed:
    at the next start it is failed, its waiting jobs too, a result still in flight is
    invalid and not re-measured, and a comparison leaves its results out."""
    c = coordinator_factory(lease_seconds=120, max_remeasures=2)
    model = c.client.upload_model(make_tiny_onnx(tmp_path / "t.onnx", "bnn"))
    jobs = c.client.create_jobs(model.id, "native", [1, 2], runs=6)
    assert c.client.wait_artifact(jobs[0].artifact_id).status == "ready"
    reg, agent = c.register_agent("board", hostname="pi4")
    lease = agent.lease(wait=10)
    assert lease is not None
    done = agent.post_result(lease.job_id, result_for(lease, [5.0, 5.01, 4.99, 5.0, 5.02, 4.98]))
    assert done.valid
    in_flight = agent.lease(wait=10)  # the other job, leased across the restart
    assert in_flight is not None
    [dev] = c.client.devices()
    assert c.client.compare(f"device={dev.id}", "library=native")["rows"]

    c.stop()
    c.query(
        "UPDATE artifacts SET report = json_set(report, '$.fidelity.passed', json('false'),"
        " '$.fidelity.verdict', 'failed: planted by the test') WHERE id = ?",
        jobs[0].artifact_id,
    )
    c.start()
    agent = c.make_client(reg.token)  # stop() closed the clients
    art = c.client.get_artifact(jobs[0].artifact_id)
    assert art.status == "failed" and art.error == "fidelity check failed: planted by the test"
    assert art.report is not None and art.report["fidelity_gate"]["passed"] is False
    late = agent.post_result(
        in_flight.job_id, result_for(in_flight, [5.0, 5.01, 4.99, 5.0, 5.02, 4.98])
    )
    assert not late.valid and "fidelity check failed: planted by the test" in late.verdict
    assert c.client.get_job(in_flight.job_id).status == "done"  # not sent back to measure
    assert c.client.compare(f"device={dev.id}", "library=native")["rows"] == []


def test_gate_decisions() -> None:
    assert fidelity_gate({})["passed"] is False
    assert "did not verify" in fidelity_gate({"padding_mode": "zero"})["verdict"]
    ok = fidelity_gate({"padding_mode": "zero", "fidelity": {"passed": True, "verdict": "passed"}})
    assert ok == {"passed": True, "verdict": "passed", "deviations": []}
    bad = fidelity_gate({"fidelity": {"passed": False, "verdict": "failed: 2 of 2 inputs"}})
    assert bad == {"passed": False, "verdict": "2 of 2 inputs", "deviations": []}
    # a deviation a back end declares, and LCE's +1 padding, are shown the same way
    lce: dict[str, Any] = {
        "padding_mode": "one",
        "fidelity": {"passed": True, "verdict": "passed", "deviations": ["rounds to bf16"]},
    }
    gate = fidelity_gate(lce)
    assert gate["deviations"][0] == "rounds to bf16"
    assert gate["deviations"][1].startswith("binary convs padded with +1 (padding_mode one)")
    assert gate["verdict"].startswith("passed; deviates from the ONNX model by design: rounds")
    # no padded binary conv: daBNN's format computes what the ONNX model does
    unpadded = {"padding_mode": "minus_one", "padding": {"padded_binary_convs": 0}}
    assert fidelity_gate({**unpadded, "fidelity": {"passed": True}})["deviations"] == []

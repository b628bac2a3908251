"""The coordinator converts for LCE and daBNN the way it does for native: in its worker, with
the converter's checks and fidelity report stored on the artifact, refusals on the jobs."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import CoordinatorProcess

from converters import zoo

pytestmark = pytest.mark.slow


def test_lce_and_dabnn_artifacts(coordinator: CoordinatorProcess, tmp_path: Path) -> None:
    entries = {
        e.algorithm: e
        for e in zoo.write_zoo(tmp_path, archs=("vggsmall",), algorithms=("bnn", "react"))
    }
    c = coordinator
    bnn = c.client.upload_model(entries["bnn"].path)
    react = c.client.upload_model(entries["react"].path)

    lce_job = c.client.create_jobs(bnn.id, "lce", [1], warmup=0, runs=2)[0]
    art = c.client.wait_artifact(lce_job.artifact_id, timeout=240)
    assert art.status == "ready", art.error
    assert art.report["n_lce_bconv2d"] == art.report["n_binary_convs"] == 5
    assert art.report["fidelity"]["passed"], art.report["fidelity"]["verdict"]

    dab_job = c.client.create_jobs(bnn.id, "dabnn", [1], warmup=0, runs=2)[0]
    art = c.client.wait_artifact(dab_job.artifact_id, timeout=240)
    assert art.status == "ready", art.error
    assert art.report["padding_mode"] == "minus_one" and art.report["fidelity"]["passed"]

    # daBNN has no activation threshold: the ReAct model's artifact fails, naming the node,
    # and so do its jobs; the BNN artifacts stay as they were
    bad_job = c.client.create_jobs(react.id, "dabnn", [1], warmup=0, runs=2)[0]
    art = c.client.wait_artifact(bad_job.artifact_id, timeout=240)
    assert art.status == "failed" and "threshold" in art.error and "/features" in art.error
    job = c.client.list_jobs(ids=[bad_job.id])[0]
    assert job.status == "failed" and "conversion failed" in job.error
    assert c.client.get_artifact(dab_job.artifact_id).status == "ready"

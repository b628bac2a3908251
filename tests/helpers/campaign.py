"""A small real campaign for the dashboard, plot and job-action tests: a real coordinator
(one per test module), two tiny ONNX models (FP32 and BNN) converted by its real workers,
measured by a registered agent that posts canned samples through its own client (as
tests/test_coordinator_results.py does), plus one failed and one queued job."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import TEST_SETTINGS, CoordinatorProcess, make_tiny_onnx, result_for, wait_for

from bnnbench.client import BnnbenchClient
from bnnbench.schemas import JobFailure, JobOut, ModelOut, RegisterResponse

# per (algorithm, threads): what the agent reports (median = the middle value; a 1 % spread,
# valid under any sane noise rule)
SAMPLES = {
    ("fp32", 1): [40.0, 40.4, 39.6],
    ("fp32", 2): [21.0, 21.2, 20.8],
    ("bnn", 1): [10.0, 10.1, 9.9],
    ("bnn", 2): [5.0, 5.05, 4.95],
}
# readings as an agent takes them before and after a run (no throttling)
ENV = {
    "transport": "local",
    "governor": "performance",
    "affinity_cpus": [0, 1, 2, 3],
    "readings_before": {"cur_freq_khz": {"cpu0": 1800000}, "temperatures_c": {"cpu": 45.0}},
    "readings_after": {"cur_freq_khz": {"cpu0": 1800000}, "temperatures_c": {"cpu": 47.5}},
}
FAILURE = "runtime exploded: illegal instruction"

PI4 = {
    "hostname": "pi4",
    "cpu_model": "Cortex-A72",
    "cores": 4,
    "arch": "aarch64",
    "identity": "board:10000000deadbeef",
    "identity_source": "cpuinfo serial",
    "soc": "BCM2711",
    "board": "Raspberry Pi 4 Model B Rev 1.4",
    "abi": "arm64-v8a",
    "ram_mb": 4096,
    "governor": "performance",
    "clusters": [{"cpus": [0, 1, 2, 3], "max_freq_khz": 1800000, "core": "Cortex-A72"}],
}
PHONE = {
    "hostname": "localhost",
    "cpu_model": "Kryo 585",
    "cores": 8,
    "arch": "aarch64",
    "transport": "adb",
    "identity": "android:BNNB865A0001",
    "identity_source": "ro.serialno",
    "soc": "SM8250",
    "abi": "arm64-v8a",
    "governor": "schedutil",
}


@dataclass
class Campaign:
    c: CoordinatorProcess
    models: dict[str, ModelOut]
    jobs: dict[tuple[str, int], JobOut]  # (algorithm, threads) -> the measured job
    agent: BnnbenchClient
    reg: RegisterResponse
    phone: RegisterResponse
    failed_job: JobOut
    queued_job: JobOut
    extra: dict[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def module_coordinator(
    tmp_path_factory: pytest.TempPathFactory, admin_token: str, **settings: Any
) -> Iterator[CoordinatorProcess]:
    """One coordinator for a whole test module (conftest's factory is per test)."""
    c = CoordinatorProcess(
        tmp_path_factory.mktemp("coordinator"), {**TEST_SETTINGS, **settings}, admin_token
    )
    try:
        yield c.start()
    finally:
        c.stop()


def run_campaign(c: CoordinatorProcess, model_dir: Path) -> Campaign:
    client = c.client
    models = {
        algo: client.upload_model(make_tiny_onnx(model_dir / f"tiny_{algo}.onnx", algo))
        for algo in ("fp32", "bnn")
    }
    jobs: dict[tuple[str, int], JobOut] = {}
    for algo, m in models.items():
        for j in client.create_jobs(m.id, "native", [1, 2], runs=3):
            jobs[(algo, j.threads)] = j
    algo_of = {j.id: algo for (algo, _), j in jobs.items()}
    reg, agent = c.register_agent("measurer", runtimes={"native": "native-test"}, **PI4)
    phone, _ = c.register_agent("phone-host", runtimes={"native": "native-test"}, **PHONE)
    # conversions first: the jobs wait for their artifacts
    client.wait_jobs(list(algo_of), timeout=120, until=lambda j: j.status != "waiting")
    while not all(j.status == "done" for j in client.list_jobs(ids=list(algo_of))):
        lease = agent.lease(wait=5)
        assert lease is not None, "a queued job was not leased"
        samples = SAMPLES[(algo_of[lease.job_id], lease.threads)]
        result = result_for(lease, samples, "native-test").model_copy(update={"env": ENV})
        posted = agent.post_result(lease.job_id, result)
        assert posted.valid, posted.verdict
    # one job that failed for good, one left in the queue (nobody leases it: no agent runs)
    (failing,) = client.create_jobs(models["bnn"].id, "native", [1], runs=3)
    lease = agent.lease(wait=5)
    assert lease is not None and lease.job_id == failing.id
    failed = agent.post_failure(
        failing.id, JobFailure(lease_id=lease.lease_id, error=FAILURE, retryable=False)
    )
    assert failed.status == "failed"
    (queued,) = client.create_jobs(models["fp32"].id, "native", [2], runs=3)
    assert queued.status == "queued"
    # the theoretical chart needs the analyses (run after the conversions)
    wait_for(
        lambda: all(m.analysis_status == "done" for m in client.list_models()),
        timeout=120,
        what="model analyses",
    )
    models = {algo: client.get_model(m.id) for algo, m in models.items()}
    return Campaign(c, models, jobs, agent, reg, phone, failed, queued)


def dashboard_cells(table: dict[str, Any]) -> dict[str, str]:
    """The API table's latency cells as the dashboard's /tables page shows them: the
    ``data-cell`` key (device|threads|arch|library|algorithm) and the milliseconds to 3 places."""
    return {
        f"{r['device']}|{r['threads']}|{r['arch']}|{lib}|{algo}": f"{v:.3f}"
        for r in table["rows"]
        for lib, algos in r["latency_ms"].items()
        for algo, v in algos.items()
    }

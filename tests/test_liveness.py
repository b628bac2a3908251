"""Liveness of the agent and its leases: a native run is a child process with a timeout (a hang
is killed, a crash is reported with its signal and the agent keeps serving), a lease is not
extended by heartbeats past its cap, and a result that cannot be written to the outbox (disk
full) is kept in memory and still posted.

Stand-in executables take the CLI's place where a crash or a hang is needed: the engine has no
test hooks."""

from __future__ import annotations

import errno
import json
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import result_for
from helpers.agents import AgentProcess, ctx_of, wait_jobs, wait_until
from native_helpers import make_native, small_network

from agent import daemon
from agent.runners.base import RunnerError, RunPlan
from agent.runners.device_cli import DeviceCliRunner, signal_name
from agent.runners.device_command import DeviceTarget
from agent.transports.local import LocalTransport
from bnnbench.http import ApiError
from bnnbench.schemas import DeviceInfo, MeasurementProtocol, ResultIn
from native import engine
from native import format as F

REAL_CLI = Path(engine.NATIVE_DIR) / "build" / "bnnbench-native"


def _executable(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    make_native()  # incremental: libbnn.so and the CLI
    path = tmp_path_factory.mktemp("liveness") / "m.bnn"
    F.write_model(small_network(np.random.default_rng(0)), path)
    return path


def _runner(cli: Path | None = None, timeout_s: float = 60.0) -> DeviceCliRunner:
    here = DeviceInfo(hostname="here", arch="x86_64", os="Linux", cpu_model="cpu", cores=1)
    target = DeviceTarget(LocalTransport(), here)
    return DeviceCliRunner(target, cli=cli, timeout_s=timeout_s, in_place=True)


# ------------------------------------------------------------------ native runs in a child


def test_signal_names() -> None:
    assert signal_name(-11) == "SIGSEGV"  # Popen: the program itself was killed
    assert signal_name(139) == "SIGSEGV"  # a shell's 128 + N
    assert signal_name(0) is None and signal_name(1) is None and signal_name(-1) is None


def test_local_cli_runner_measures_like_the_in_process_one(model: Path) -> None:
    r = _runner()
    assert r.available() and r.version() == engine.version()
    out = r.benchmark(model, RunPlan(1, 1, 3))
    assert len(out.samples_ms) == 3 and all(s > 0 for s in out.samples_ms)
    assert out.runtime_version == engine.version()
    assert out.extra["output_finite"] is True and out.extra["process"] == "child process"
    p = MeasurementProtocol(min_time_ms=30.0, max_runs=7)
    capped = r.benchmark(model, RunPlan(1, 0, 3, protocol=p))
    assert 3 <= len(capped.samples_ms) <= 7


def test_a_crash_is_reported_with_its_signal(tmp_path: Path, model: Path) -> None:
    cli = _executable(tmp_path / "bnnbench-native", "#!/bin/sh\nkill -SEGV $$\n")
    with pytest.raises(RunnerError) as err:
        _runner(cli).benchmark(model, RunPlan(1, 0, 3))
    assert "bnnbench-native was killed by SIGSEGV" in str(err.value)
    assert err.value.retryable


def test_a_hung_run_is_killed_at_its_timeout(tmp_path: Path, model: Path) -> None:
    cli = _executable(tmp_path / "bnnbench-native", "#!/bin/sh\nexec sleep 60\n")
    start = time.monotonic()
    with pytest.raises(RunnerError) as err:
        _runner(cli, timeout_s=0.5).benchmark(model, RunPlan(1, 0, 3))
    assert time.monotonic() - start < 20  # killed, not waited for
    assert "did not finish within 0.5 s" in str(err.value) and "was killed" in str(err.value)
    assert err.value.retryable


def test_a_refused_model_is_not_retried(tmp_path: Path) -> None:
    bad = tmp_path / "bad.bnn"
    bad.write_bytes(b"not a model")
    with pytest.raises(RunnerError) as err:
        _runner().benchmark(bad, RunPlan(1, 0, 3))
    assert not err.value.retryable and "failed on this machine" in str(err.value)


@pytest.mark.slow  # a real coordinator and agent process: seconds
def test_agent_survives_a_crashing_engine_and_takes_the_next_job(
    coordinator_factory: Any,
    agents: Callable[..., AgentProcess],
    tiny_onnx: Path,
    tmp_path: Path,
) -> None:
    """The first run of the CLI dies of SIGSEGV: the job fails with that cause (retryable,
    max_attempts=1 makes it final), the agent stays up and runs the next job with the real
    CLI."""
    coordinator = coordinator_factory(max_attempts=1)
    client = coordinator.client
    cli_dir, marker = tmp_path / "cli", tmp_path / "crashed-once"
    _executable(
        cli_dir / "bnnbench-native",
        f'#!/bin/sh\nif [ ! -e "{marker}" ]; then : > "{marker}"; kill -SEGV $$; fi\n'
        f'exec "{REAL_CLI}" "$@"\n',
    )
    agent = agents(coordinator, "crashy", env={"BNNBENCH_AGENT_NATIVE_CLI_DIR": str(cli_dir)})
    ctx = ctx_of(coordinator, agent)
    model = client.upload_model(tiny_onnx)
    [first] = client.create_jobs(model.id, "native", threads=[1], warmup=0, runs=3)
    [crashed] = wait_jobs(client, [first.id], ctx)
    assert crashed.status == "failed", crashed
    assert "bnnbench-native was killed by SIGSEGV" in (crashed.error or ""), crashed.error
    assert agent.proc is not None and agent.proc.poll() is None, agent.context()
    [second] = client.create_jobs(model.id, "native", threads=[2], warmup=0, runs=3)
    [done] = wait_jobs(client, [second.id], ctx)
    assert done.status == "done", (done.error, agent.context())
    [res] = client.results(job_id=second.id)
    assert res.runtime_version == engine.version() and res.env["runner"]["output_finite"]
    assert agent.proc.poll() is None


# ------------------------------------------------------------------ lease cap


@pytest.mark.slow  # a real coordinator: a few seconds
def test_heartbeats_do_not_extend_a_lease_past_its_cap(coordinator_factory: Any) -> None:
    coordinator = coordinator_factory(
        max_lease_total_s=1.5, lease_seconds=1.0, reaper_interval_seconds=0.2, max_attempts=1
    )
    client = coordinator.client
    _, api = coordinator.register_agent("holder")
    [job] = client.create_jobs(
        client.upload_model(_tiny(coordinator)).id, "native", threads=[1], warmup=0, runs=3
    )
    lease = wait_until(lambda: api.lease(0.5), "the job to be leased", 60)
    assert lease.job_id == job.id
    deadline = time.monotonic() + 30
    refused: ApiError | None = None
    while time.monotonic() < deadline:
        try:
            api.heartbeat(job.id, retry=False)
        except ApiError as exc:
            refused = exc
            break
        time.sleep(0.2)
    assert refused is not None and refused.status_code == 409, refused
    assert "past its cap of 1.5 s" in refused.detail
    failed = wait_until(
        lambda: (j := client.get_job(job.id)).status == "failed" and j, "the lease to expire"
    )
    assert "lease expired" in (failed.error or "")
    [(history,)] = coordinator.query("SELECT history FROM jobs WHERE id = ?", job.id)
    events = [e["event"] for e in json.loads(history)]
    assert events.index("lease cap reached") < events.index("lease expired"), events
    with pytest.raises(ApiError) as err:  # the result of a lease held past its cap is refused
        api.post_result(job.id, result_for(lease, [1.0, 1.0, 1.0]))
    assert err.value.status_code == 409


def _tiny(coordinator: Any) -> Path:
    from conftest import make_tiny_onnx

    return make_tiny_onnx(coordinator.data_dir / "tiny.onnx", "bnn")


# ------------------------------------------------------------------ outbox on a full disk


def _result() -> ResultIn:
    return ResultIn(lease_id="l" * 32, samples_ms=[1.0, 2.0, 3.0], runtime_version="t", env={})


def test_outbox_keeps_a_result_in_memory_when_the_disk_is_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    box = daemon.Outbox(tmp_path / "outbox")
    real_write = daemon._write_private

    def full(path: Path, data: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(daemon, "_write_private", full)
    assert box.put(7, _result()) is False
    assert "cannot write the result to the outbox" in caplog.text
    assert "No space left on device" in caplog.text
    assert [j for j, _ in box.pending()] == [7]  # still to post, written again on each look
    assert box.in_memory_only(7) and not list(box.root.iterdir())

    monkeypatch.setattr(daemon, "_write_private", real_write)  # space again
    [(job, res)] = box.pending()
    assert job == 7 and res.samples_ms == [1.0, 2.0, 3.0]
    assert not box.in_memory_only(7) and (box.root / "job-7.json").is_file()
    box.remove(7)
    assert box.pending() == []


def test_outbox_write_is_atomic_and_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    box = daemon.Outbox(tmp_path / "outbox")
    assert box.put(1, _result())
    before = (box.root / "job-1.json").read_bytes()

    def fsync_fails(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(daemon.os, "fsync", fsync_fails)
    changed = ResultIn(lease_id="m" * 32, samples_ms=[9.0], runtime_version="t", env={})
    assert box.put(1, changed) is False
    assert (box.root / "job-1.json").read_bytes() == before  # the old file untouched
    assert sorted(p.name for p in box.root.iterdir()) == ["job-1.json"]  # no temp left over


def test_agent_posts_a_result_the_outbox_could_not_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Agent.process with a full disk: the result is still delivered."""
    posted: list[int] = []

    class Api:
        token = "t"

        def post_result(self, job_id: int, result: ResultIn) -> None:
            posted.append(job_id)

    agent = object.__new__(daemon.Agent)
    agent.outbox = daemon.Outbox(tmp_path / "outbox")
    agent.api = Api()  # type: ignore[assignment]
    agent._current_job = agent._posting = None
    monkeypatch.setattr(
        daemon, "_write_private", lambda *a: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full"))
    )
    monkeypatch.setattr(agent, "_measure", lambda lease: _result(), raising=False)

    class Lease:
        job_id = 5
        lease_expires_at = daemon.datetime.now(daemon.UTC)
        threads, warmup, runs = 1, 0, 3

        class artifact:  # noqa: N801
            library, id, sha256 = "native", 1, "0" * 64

    agent.process(Lease())  # type: ignore[arg-type]
    assert posted == [5] and agent.outbox.pending() == []

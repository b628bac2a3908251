"""Faults, end to end: real coordinators (`python -m coordinator`, SQLite), real agent
processes (`bnnbench agent`) running the real native CLI, and real failures — an agent killed
with SIGKILL in the middle of a job, the coordinator killed with SIGKILL under load and
restarted, an agent cut off from the coordinator by a TCP proxy that blackholes its traffic
(tests/helpers/netproxy.py), a job cancelled or past its lease cap while it runs. Whatever
happens, nothing is lost and nothing is counted twice: every job ends with exactly one accepted
result, an expired lease counts one attempt, and a run nobody wants any more does not go on.

All local agents measure one device (this machine), and the coordinator runs one benchmark
per device at a time: the agents take turns, as on a shared board. Waits poll with generous
deadlines; the only bounds on time are those a test is about (a killed run is gone well before
it would have ended by itself).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import ADMIN_TOKEN, TEST_SETTINGS, CoordinatorProcess
from helpers.agents import REPO, AgentProcess, ctx_of, wait_jobs, wait_until
from helpers.fake_adbd import FakeAdbd, isolated_adb_server
from helpers.netproxy import TcpProxy
from helpers.onnx_builder import make_slow_onnx
from helpers.procs import children, pid_alive
from helpers.sshd import start_sshd

from agent.transports.adb import AdbTransport
from agent.transports.base import CancelScope, RunCancelled, Transport, cancel_scope
from agent.transports.local import LocalTransport
from agent.transports.ssh import SshTransport
from bnnbench.client import BnnbenchClient
from bnnbench.schemas import JobOut, ModelOut
from native import engine

# protocols of the jobs a test needs running for a while: the CLI measures at least this long
# (whatever this machine's speed), so a run is observable, and one killed is told apart from
# one that ended by itself by a margin of seconds
RUNS_2S = {"min_time_ms": 2000, "max_runs": 100_000}
RUNS_6S = {"min_time_ms": 6000, "max_runs": 100_000}
RUNS_60S = {"min_time_ms": 60_000, "max_runs": 100_000}
KILLED_WITHIN = 3.0  # a killed agent's run is gone by then (it would run 6 s by itself)
STOPPED_WITHIN = 15.0  # a cancelled run is gone by then (it would run 60 s by itself)

SHARED = {
    "lease_seconds": 4,  # a lost lease expires soon; a short cut does not outlast it
    "reaper_interval_seconds": 0.2,
    # heartbeats keep a lease for 1.5 s plus 3x the time its protocol asks for: the jobs
    # above keep theirs; a job that asks for none is refused a heartbeat after 1.5 s
    "max_lease_total_s": 1.5,
}


# ------------------------------------------------------------------ helpers


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        for child in children(todo.pop()):
            out.append(child)
            todo.append(child)
    return out


def _argv0(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0].decode()
    except OSError:
        return ""


def cli_pids(agent: AgentProcess) -> list[int]:
    """The agent's running ``bnnbench-native`` processes (children of its children)."""
    assert agent.proc is not None
    return [p for p in _descendants(agent.proc.pid) if _argv0(p).endswith("bnnbench-native")]


def running_cli(agent: AgentProcess, job: JobOut) -> list[int]:
    agent.wait_log(f"running job {job.id}")
    return wait_until(lambda: cli_pids(agent), f"{agent.name}'s bnnbench-native", 60, agent.context)


def gone_within(pids: list[int], seconds: float, what: str, ctx: Callable[[], str]) -> float:
    """Seconds until none of ``pids`` runs; fails past ``seconds``."""
    start = time.monotonic()
    wait_until(lambda: not any(pid_alive(p) for p in pids), what, seconds, ctx)
    return time.monotonic() - start


def events(c: CoordinatorProcess, job_id: int) -> list[tuple[str, Any]]:
    [(history,)] = c.query("SELECT history FROM jobs WHERE id = ?", job_id)
    return [(e["event"], e.get("agent")) for e in json.loads(history)]


def result_agents(c: CoordinatorProcess, job_id: int) -> list[int]:
    return [a for (a,) in c.query("SELECT agent_id FROM results WHERE job_id = ?", job_id)]


def refused(agent: AgentProcess) -> list[dict[str, Any]]:
    """The results this agent's coordinator refused for good, kept as a record."""
    folder = agent.cache_dir / "outbox" / "refused"
    return [json.loads(p.read_text()) for p in sorted(folder.glob("job-*.json"))]


def preconvert(c: CoordinatorProcess, *models: ModelOut) -> None:
    """Convert the models' native artifacts before any agent runs: jobs parked on a device no
    agent serves start the conversions; they are cancelled once the artifacts are ready."""
    parking, _ = c.register_agent("parking", hostname="parking")
    for m in models:
        [job] = c.client.create_jobs(m.id, "native", [1], device_id=parking.device_id)
        assert c.client.wait_artifact(job.artifact_id, timeout=300).status == "ready"
        c.client.cancel_job(job.id)


@dataclass
class Shared:
    c: CoordinatorProcess
    model: ModelOut


@pytest.fixture(scope="module", autouse=True)
def _built_engine() -> None:
    engine.version()  # libbnn.so and the CLI built once here, not by several agents at once


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    """One coordinator for the tests that do not kill it, with the model converted."""
    c = CoordinatorProcess(
        tmp_path_factory.mktemp("coordinator"), {**TEST_SETTINGS, **SHARED}, ADMIN_TOKEN
    )
    c.start()
    try:
        model = c.client.upload_model(make_slow_onnx(tmp_path_factory.mktemp("m") / "m.onnx"))
        preconvert(c, model)
        yield Shared(c, model)
    finally:
        c.stop()


@pytest.fixture
def env(shared: Shared) -> Iterator[Shared]:
    """The shared coordinator; a test's unfinished jobs are cancelled after it, so the next
    test's agents take only their own."""
    yield shared
    client = shared.c.client
    for job in client.list_jobs():
        if job.status in ("waiting", "queued", "leased"):
            client.cancel_job(job.id)


def one(client: BnnbenchClient, model: ModelOut, **kw: Any) -> JobOut:
    """A job of ``model``; without a protocol a short one (3 runs, a fraction of a second)."""
    [job] = client.create_jobs(model.id, "native", [1], warmup=0, runs=3, **kw)
    return job


# ------------------------------------------------------------------ an agent killed mid-job


@pytest.mark.slow  # real coordinator and agent processes
def test_an_agent_killed_mid_job_leaves_no_run_and_the_job_is_measured_once(
    env: Shared, agents: Callable[..., AgentProcess]
) -> None:
    c, client = env.c, env.c.client
    alpha, beta = agents(c, "alpha"), agents(c, "beta")
    ctx = ctx_of(c, alpha, beta)
    by_id = {alpha.agent_id: alpha, beta.agent_id: beta}
    job = one(client, env.model, protocol=RUNS_6S)
    leased = wait_until(
        lambda: (j := client.get_job(job.id)).status == "leased" and j, "the job leased", 60, ctx
    )
    holder = by_id[leased.leased_by]
    other = beta if holder is alpha else alpha
    clis = running_cli(holder, job)

    holder.kill9()
    # its run dies with it (the guard of agent.transports.local), not 6 s later by itself
    gone_within(clis, KILLED_WITHIN, "the killed agent's bnnbench-native to end", ctx)

    [done] = wait_jobs(client, [job.id], ctx)
    assert done.status == "done", done.error
    assert done.attempts == 1  # the expired lease, once
    assert result_agents(c, job.id) == [other.agent_id]
    seen = events(c, job.id)
    assert seen[0] == ("leased", holder.agent_id)
    assert seen.count(("lease expired", None)) == 1
    assert ("leased", other.agent_id) in seen and seen[-1] == ("done", other.agent_id)
    assert other.outbox() == [] and refused(other) == []


# ------------------------------------------------------------------ the coordinator killed


@pytest.mark.slow  # real coordinator and agent processes
def test_the_coordinator_killed_and_restarted_under_load_loses_and_doubles_nothing(
    coordinator_factory: Callable[..., CoordinatorProcess],
    agents: Callable[..., AgentProcess],
    tmp_path: Path,
) -> None:
    # leases outlast the outage: a result kept through it must be accepted as it is
    c = coordinator_factory(lease_seconds=60, reaper_interval_seconds=0.2)
    client = c.client
    crew = [agents(c, f"crew-{i}") for i in range(3)]  # they start while the model converts
    ctx = ctx_of(c, *crew)
    model = client.upload_model(make_slow_onnx(tmp_path / "m.onnx"))
    preconvert(c, model)
    by_id = {a.agent_id: a for a in crew}
    # one device: jobs run one at a time in order, so the long one runs with short ones on
    # both sides of it; the coordinator dies while it runs
    before = [one(client, model) for _ in range(4)]
    slow_job = one(client, model, protocol=RUNS_2S)
    after = [one(client, model) for _ in range(8)]
    ids = [j.id for j in (*before, slow_job, *after)]

    leased = wait_until(
        lambda: (j := client.get_job(slow_job.id)).status == "leased" and j,
        "the slow job leased",
        120,
        ctx,
    )
    holder = by_id[leased.leased_by]
    running_cli(holder, slow_job)
    c.kill()  # SIGKILL: no shutdown code runs

    # the run ends during the outage: its result waits in the outbox, posted again and again
    holder.wait_log(f"/jobs/{slow_job.id}/result: coordinator unreachable")
    assert [p.name for p in holder.outbox()] == [f"job-{slow_job.id}.json"]
    c.start()  # same data dir, same database, same port
    client = c.client  # the old one was closed with the server

    final = wait_jobs(client, ids, ctx)
    assert [j.status for j in final] == ["done"] * len(ids), [(j.id, j.error) for j in final]
    assert all(j.attempts == 0 for j in final), [(j.id, j.attempts) for j in final]
    counts = dict(c.query("SELECT job_id, COUNT(*) FROM results GROUP BY job_id"))
    assert counts == dict.fromkeys(ids, 1)  # exactly one accepted result each
    assert result_agents(c, slow_job.id) == [holder.agent_id]  # the kept one, delivered
    [res] = client.results(job_id=slow_job.id)
    assert res.env["agent"]["name"] == holder.name
    for a in crew:  # every agent rode out the outage and is still serving
        assert a.proc is not None and a.proc.poll() is None, a.context()
        assert "coordinator unreachable" in a.log() or "heartbeat failed" in a.log()
        wait_until(lambda a=a: a.outbox() == [], f"{a.name}'s outbox to empty", context=ctx)
    # a result whose answer the crash swallowed is refused when posted again, never doubled
    for a in crew:
        for kept in refused(a):
            assert counts[kept["job_id"]] == 1 and "HTTP 409" in kept["reason"]


# ------------------------------------------------------------------ an agent cut off


@pytest.mark.slow  # real coordinator and agent processes
def test_an_agent_cut_off_and_back(env: Shared, agents: Callable[..., AgentProcess]) -> None:
    c, client = env.c, env.c.client
    with TcpProxy(c.port) as net:
        # the agent's only way to the coordinator is the proxy
        far = agents(SimpleNamespace(url=net.url, admin_token=c.admin_token), "far")
        far.identity()  # registered
        ctx = ctx_of(c, far)

        # a cut longer than the lease: the job goes to another agent while the first still
        # measures; the first's late result is refused, kept only as its own record
        late = one(client, env.model, protocol=RUNS_2S)
        running_cli(far, late)
        net.cut()
        near = agents(c, "near")
        ctx = ctx_of(c, far, near)
        wait_until(
            lambda: client.get_job(late.id).leased_by == near.agent_id,
            "the job to go to the other agent",
            context=ctx,
        )
        wait_until(
            lambda: far.outbox(), "the cut-off agent's result to wait in its outbox", context=ctx
        )
        net.restore()
        far.wait_log(f"job {late.id}: coordinator refused the result (HTTP 409")
        [done] = wait_jobs(client, [late.id], ctx)
        assert done.status == "done" and done.attempts == 1, done
        assert result_agents(c, late.id) == [near.agent_id]  # never the late one
        [record] = refused(far)
        assert record["job_id"] == late.id and "HTTP 409" in record["reason"]
        assert len(record["result"]["samples_ms"]) > 0  # the measurement itself is kept
        assert events(c, late.id).count(("lease expired", None)) == 1
        assert far.outbox() == []
        near.stop()

        # a cut shorter than the lease: the result waits it out and counts, once
        job = one(client, env.model, protocol=RUNS_2S)
        running_cli(far, job)
        net.cut()
        wait_until(lambda: far.outbox(), "the result to wait in the outbox", context=ctx)
        assert client.get_job(job.id).status == "leased"  # the lease outlives the cut
        net.restore()
        [done] = wait_jobs(client, [job.id], ctx)
        assert done.status == "done" and done.attempts == 0, done
        assert result_agents(c, job.id) == [far.agent_id]
        wait_until(lambda: far.outbox() == [], "the outbox to empty", context=ctx)
        assert [r["job_id"] for r in refused(far)] == [late.id]  # nothing refused this time

        # and the agent carries on
        nxt = one(client, env.model)
        [done] = wait_jobs(client, [nxt.id], ctx)
        assert done.status == "done" and result_agents(c, nxt.id) == [far.agent_id]
        assert far.proc is not None and far.proc.poll() is None


# ------------------------------------------------------------------ runs nobody wants


@pytest.mark.slow  # real coordinator and agent processes
def test_a_cancelled_or_capped_run_is_stopped_and_the_agent_moves_on(
    env: Shared, agents: Callable[..., AgentProcess]
) -> None:
    c, client = env.c, env.c.client
    agent = agents(c, "stopper")
    ctx = ctx_of(c, agent)

    # the operator cancels the job while it runs: the next heartbeat is answered 409 and the
    # agent kills the run at once, posting nothing
    job = one(client, env.model, protocol=RUNS_60S)
    clis = running_cli(agent, job)
    client.cancel_job(job.id)
    gone_within(clis, STOPPED_WITHIN, "the cancelled run's bnnbench-native to be killed", ctx)
    agent.wait_log(f"job {job.id}: run stopped")
    nxt = one(client, env.model)
    [done] = wait_jobs(client, [nxt.id], ctx)
    assert done.status == "done" and result_agents(c, nxt.id) == [agent.agent_id]
    cancelled = client.get_job(job.id)
    assert cancelled.status == "cancelled" and cancelled.attempts == 0
    assert result_agents(c, job.id) == []
    assert [e for e, _ in events(c, job.id)] == ["leased", "cancelled"]  # no failure reported
    assert refused(agent) == []

    # a run past the lease cap (1.5 s for a job whose protocol asks for no time) is stopped
    # the same way, not measured to the end for a result the coordinator would refuse
    [capped] = client.create_jobs(env.model.id, "native", [1], warmup=0, runs=10_000)
    clis = running_cli(agent, capped)
    gone_within(clis, STOPPED_WITHIN, "the capped run's bnnbench-native to be killed", ctx)
    agent.wait_log(f"job {capped.id}: run stopped")
    assert "past its cap of 1.5 s" in agent.log()
    assert "lease cap reached" in [e for e, _ in events(c, capped.id)]
    assert result_agents(c, capped.id) == []
    assert agent.proc is not None and agent.proc.poll() is None


# ------------------------------------------------------------------ the transports' part


def _cancelled_mid_run(t: Transport, pid_file: str, read: Callable[[], str]) -> list[int]:
    """Run a command that starts a background child on ``t``, cancel its scope once the
    child runs; returns the pids of the shell and its child (both must then be gone)."""
    scope = CancelScope()

    def cancel_when_started() -> None:
        wait_until(read, "the command to start", 60)
        scope.cancel("job cancelled")

    threading.Thread(target=cancel_when_started, daemon=True).start()
    started = time.monotonic()
    with cancel_scope(scope), pytest.raises(RunCancelled, match="job cancelled"):
        t.run(f"sleep 300 & echo $$ $! > {pid_file}; wait", timeout=60)
    assert time.monotonic() - started < 45  # stopped, not waited out
    return [int(x) for x in read().split()]


def test_a_cancelled_local_run_and_an_agent_gone_take_the_whole_process_group(
    tmp_path: Path,
) -> None:
    t = LocalTransport(tmp_path)
    pid_file = tmp_path / "pids"
    pids = _cancelled_mid_run(t, str(pid_file), lambda: pid_file.exists() and pid_file.read_text())
    for pid in pids:
        wait_until(lambda pid=pid: not pid_alive(pid), f"process {pid} to die", 10)
    assert t.run("echo still usable", timeout=10).stdout == "still usable\n"
    # an agent killed with SIGKILL (no cleanup runs) takes its command's processes with it
    pid_file.unlink()
    script = (
        "import sys; from agent.transports.local import LocalTransport; "
        "LocalTransport(sys.argv[1]).run(sys.argv[2], timeout=300)"
    )
    command = f"sleep 300 & echo $$ $! > {pid_file}; wait"
    holder = subprocess.Popen([sys.executable, "-c", script, str(tmp_path), command], cwd=REPO)
    try:
        pids = wait_until(lambda: pid_file.exists() and pid_file.read_text().split(), "a start")
    finally:
        holder.kill()
        holder.wait()
    for pid in map(int, pids):
        wait_until(lambda pid=pid: not pid_alive(pid), f"orphan {pid} to die", 10)
    # outside a scope nothing changes: exit codes, output, a signal's death as 128+N
    r = t.run("echo out; echo err >&2; exit 3", timeout=10)
    assert (r.stdout, r.stderr, r.exit_code) == ("out\n", "err\n", 3)
    assert t.run("kill -SEGV $$", timeout=10).exit_code == 139


@pytest.mark.fleet  # a real OpenSSH server on loopback
def test_a_cancelled_run_is_killed_on_an_ssh_board(tmp_path: Path) -> None:
    server = start_sshd(tmp_path / "sshd")
    t = SshTransport(**server.transport_kwargs(workdir=str(tmp_path / "work")))
    try:
        pid_file = tmp_path / "pids"
        pids = _cancelled_mid_run(
            t, str(pid_file), lambda: pid_file.exists() and pid_file.read_text().strip()
        )
        for pid in pids:  # killed on the board from a second channel, not left running
            wait_until(lambda pid=pid: not pid_alive(pid), f"remote process {pid} to die", 15)
        assert t.run("echo still usable", timeout=30).stdout == "still usable\n"
    finally:
        t.close()
        server.stop()


@pytest.mark.fleet  # the real adb client against a fake phone on loopback
def test_a_cancelled_run_is_killed_on_an_adb_phone(tmp_path: Path) -> None:
    adb = shutil.which("adb")
    assert adb is not None, "the adb client is not installed: make system-deps installs it"
    with isolated_adb_server(tmp_path / "adb", adb) as env, FakeAdbd(tmp_path / "phone") as phone:
        t = AdbTransport(phone.serial, env=env)
        pid_file = "/data/local/tmp/pids"

        def read() -> str:
            path = phone.path(pid_file)
            return path.read_text().strip() if path.exists() else ""

        pids = _cancelled_mid_run(t, pid_file, read)
        for pid in pids:  # the fake phone runs its commands on this host
            wait_until(lambda pid=pid: not pid_alive(pid), f"phone process {pid} to die", 15)
        assert t.run("echo still usable", timeout=30).stdout == "still usable\n"

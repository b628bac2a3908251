"""Who may do what: enrolment tokens (register only), re-registration needs proof (the
agent's own token, or the admin token replacing it), artifact downloads limited to the
agent's lease, the admin token refused when guessable, tokens kept off command lines.

One coordinator serves the module (its admin token comes from a file, as a deployment should
give it); every job here is targeted at one test's device, so no test leases another's.
Real agent processes: an agent with a token file, and two agents started with one name.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import (
    REPO,
    TEST_SETTINGS,
    CoordinatorProcess,
    make_tiny_onnx,
    result_for,
    wait_for,
)
from helpers.agents import AgentProcess, ctx_of, wait_jobs, wait_until
from typer.testing import CliRunner

from bnnbench.cli import app
from bnnbench.client import BnnbenchClient
from bnnbench.http import ApiError
from bnnbench.schemas import API_PREFIX, ArtifactOut, JobOut, RegisterResponse
from bnnbench.tokenfile import TokenFileError, client_token, read_token_file
from coordinator.auth import admin_token_problem

DEVICE = {
    "arch": "aarch64",
    "os": "Linux test",
    "cpu_model": "Cortex-A72",
    "cores": 4,
    "isa_flags": ["neon"],
    "transport": "ssh",
}

BNNBENCH_SERVE = [sys.executable, "-m", "bnnbench.cli", "serve"]  # the real command


class FileTokenCoordinator(CoordinatorProcess):
    """A coordinator given its admin token by BNNBENCH_ADMIN_TOKEN_FILE, not the variable."""

    def __init__(self, data_dir: Path, token_file: Path) -> None:
        super().__init__(data_dir, dict(TEST_SETTINGS), read_token_file(token_file))
        self.token_file = token_file

    def env(self) -> dict[str, str]:
        env = super().env()
        del env["BNNBENCH_ADMIN_TOKEN"]
        env["BNNBENCH_ADMIN_TOKEN_FILE"] = str(self.token_file)
        return env


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FileTokenCoordinator]:
    secret_dir = tmp_path_factory.mktemp("secret")
    token_file = secret_dir / "admin.token"
    token_file.write_text(secrets.token_hex(16) + "\n")
    token_file.chmod(0o600)
    c = FileTokenCoordinator(tmp_path_factory.mktemp("coordinator"), token_file)
    try:
        yield c.start()
    finally:
        c.stop()


@pytest.fixture(scope="module")
def artifact(server: FileTokenCoordinator, tmp_path_factory: pytest.TempPathFactory) -> ArtifactOut:
    """A ready native artifact (its conversion job targets a board nobody serves)."""
    c = server
    holder, _ = _register(c, "holder")
    model = c.client.upload_model(make_tiny_onnx(tmp_path_factory.mktemp("m") / "m.onnx"))
    [job] = c.client.create_jobs(model.id, "native", [1], device_id=holder.device_id)
    art = c.client.wait_artifact(job.artifact_id)
    assert art.status == "ready", art.error
    wait_for(lambda: c.client.get_model(model.id).analysis_status == "done", what="analysis")
    return art


def _body(name: str, *, replace: bool = False, hostname: str | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "device": {**DEVICE, "hostname": hostname or f"board-{name}"},
        "runtimes": {"native": "test-1"},
        "replace": replace,
    }


def _register(
    c: CoordinatorProcess, name: str, token: str | None = None, **kw: Any
) -> tuple[RegisterResponse, BnnbenchClient]:
    reg = c.client.register_agent(_body(name, **kw), token=token)
    return reg, c.make_client(reg.token)


def _post(c: CoordinatorProcess, path: str, token: str, **kw: Any) -> httpx.Response:
    return httpx.post(
        f"{c.url}{API_PREFIX}{path}", headers={"Authorization": f"Bearer {token}"}, **kw
    )


def _status(call: Callable[[], object]) -> tuple[int, str]:
    with pytest.raises(ApiError) as err:
        call()
    return err.value.status_code, err.value.detail


def _jobs_for(
    c: CoordinatorProcess, art: ArtifactOut, reg: RegisterResponse, n: int = 1
) -> list[JobOut]:
    jobs = c.client.create_jobs(art.model_id, "native", range(1, n + 1), device_id=reg.device_id)
    assert {j.status for j in jobs} == {"queued"}
    return jobs


# ------------------------------------------------------------------ enrolment tokens


def test_an_enrolment_token_only_registers_agents(
    server: FileTokenCoordinator, artifact: ArtifactOut, tiny_onnx: Path
) -> None:
    c = server
    made = c.client.create_enrolment_token(note="lab boards", max_uses=2)
    assert made.uses == 0 and made.max_uses == 2 and made.usable and made.note == "lab boards"
    enrol = made.token
    stored = c.query("SELECT token_hash FROM enrolment_tokens WHERE id = ?", made.id)
    assert stored == [(hashlib.sha256(enrol.encode()).hexdigest(),)]  # never the token itself

    reg, agent = _register(c, "enrolled-a", token=enrol)
    assert agent.heartbeat().ok  # the agent works with its own token at once
    denied = [
        ("GET", "/models", {}),
        ("POST", "/models", {"files": {"file": ("m.onnx", tiny_onnx.read_bytes())}}),
        ("POST", "/jobs", {"json": {"model_id": artifact.model_id, "threads": [1]}}),
        ("GET", "/jobs", {}),
        ("GET", "/devices", {}),
        ("GET", "/results/table", {}),
        ("GET", f"/artifacts/{artifact.id}/download", {}),
        ("POST", "/agents/heartbeat", {"json": {}}),
        ("POST", "/agents/lease", {}),
        ("POST", "/enrolment-tokens", {"json": {}}),
        ("GET", "/enrolment-tokens", {}),
    ]
    for method, path, kw in denied:
        r = httpx.request(
            method, f"{c.url}{API_PREFIX}{path}", headers={"Authorization": f"Bearer {enrol}"}, **kw
        )
        assert r.status_code == 403, (method, path, r.text)
        assert "an enrolment token can only register agents" in r.json()["detail"]
    # nor may an agent make enrolment tokens, nor an enrolment token replace an agent
    assert _status(lambda: agent.create_enrolment_token())[0] == 403
    code, detail = _status(lambda: _register(c, "enrolled-a", token=enrol, replace=True))
    assert code == 403 and "needs the admin token" in detail

    second, _ = _register(c, "enrolled-b", token=enrol)
    code, detail = _status(lambda: _register(c, "enrolled-c", token=enrol))
    assert code == 401 and f"enrolment token {made.id} is used up (2 of 2" in detail
    [row] = [t for t in c.client.enrolment_tokens() if t.id == made.id]
    assert (row.uses, row.usable, row.last_used_at is not None) == (2, False, True)
    assert c.query("SELECT count(*) FROM agents WHERE name LIKE 'enrolled-%'") == [(2,)]
    assert second.agent_id != reg.agent_id

    # expiry and revocation; the agents it registered keep working
    brief = c.client.create_enrolment_token(expires_in_seconds=0.2)
    revoked = c.client.create_enrolment_token()
    assert c.client.revoke_enrolment_token(revoked.id).revoked_at is not None
    assert c.client.revoke_enrolment_token(revoked.id).usable is False  # again: no change
    wait_for(lambda: not [t for t in c.client.enrolment_tokens() if t.id == brief.id][0].usable)
    code, detail = _status(lambda: _register(c, "late", token=brief.token))
    assert code == 401 and f"enrolment token {brief.id} expired at" in detail
    code, detail = _status(lambda: _register(c, "late", token=revoked.token))
    assert code == 401 and f"enrolment token {revoked.id} was revoked at" in detail
    assert agent.heartbeat().ok
    assert _status(lambda: c.client.revoke_enrolment_token(10**6))[0] == 404
    r = _post(c, "/enrolment-tokens", c.admin_token, json={"max_uses": 0})
    assert r.status_code == 422 and "max_uses" in r.json()["detail"]


def test_tokens_cli_creates_lists_and_revokes(server: FileTokenCoordinator, tmp_path: Path) -> None:
    c = server
    env = {"BNNBENCH_COORDINATOR": c.url, "BNNBENCH_TOKEN_FILE": str(c.token_file)}
    runner = CliRunner()
    out = tmp_path / "board.token"
    res = runner.invoke(
        app, ["tokens", "create", "--uses", "1", "--expires-in", "1h", "-o", str(out)], env=env
    )
    assert res.exit_code == 0, res.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    token = read_token_file(out)
    assert token not in res.output and "written to" in res.stderr
    reg, _ = _register(c, "cli-board", token=token)
    res = runner.invoke(app, ["tokens", "list", "--json"], env=env)
    rows = {t["id"]: t for t in json.loads(res.stdout)}
    made = max(rows)
    assert rows[made]["uses"] == 1 and rows[made]["usable"] is False
    assert "token" not in rows[made]  # the token itself is never listed

    res = runner.invoke(app, ["tokens", "create", "--note", "fleet"], env=env)
    assert res.exit_code == 0, res.output
    printed = res.stdout.strip()  # stdout holds the token alone: `> file` works
    assert len(printed) >= 40 and " " not in printed
    res = runner.invoke(app, ["tokens", "revoke", str(made + 1)], env=env)
    assert res.exit_code == 0 and "unusable" in res.stdout and "fleet" in res.stdout
    # --token on the command line still works, with a warning on stderr
    res = runner.invoke(
        app, ["tokens", "list", "--coordinator", c.url, "--token", c.admin_token], env={}
    )
    assert res.exit_code == 0, res.output
    assert "--token on the command line is visible to every user" in res.stderr
    res = runner.invoke(app, ["tokens", "create", "--expires-in", "soon"], env=env)
    assert res.exit_code == 2 and "no duration" in res.output
    res = runner.invoke(app, ["tokens", "list", "--token-file", str(tmp_path / "nope")], env=env)
    assert res.exit_code == 2 and "does not exist" in res.output


# ------------------------------------------------------------------ re-registration


def test_reregistration_needs_the_agents_token_or_the_admin_replacing_it(
    server: FileTokenCoordinator, artifact: ArtifactOut
) -> None:
    c = server
    enrol = c.client.create_enrolment_token().token
    reg, agent = _register(c, "proof", token=enrol)
    [job] = _jobs_for(c, artifact, reg)
    lease = agent.lease(wait=5)
    assert lease is not None and lease.job_id == job.id

    # an enrolment token, or the admin token without replace: refused, nothing rotated
    for token in (enrol, None):
        code, detail = _status(lambda t=token: _register(c, "proof", token=t))
        assert code == 409, detail
        assert f"'proof' is already registered on this device (agent {reg.agent_id}," in detail
        assert "is live: last seen" in detail and "another --name" in detail
    assert agent.heartbeat(job.id).lease_extended_until is not None  # token and lease kept

    # its own token: the same agent, same token, lease kept, runtimes refreshed
    again = agent.register_agent(_body("proof") | {"runtimes": {"native": "test-2"}})
    assert (again.agent_id, again.token) == (reg.agent_id, reg.token)
    assert agent.heartbeat(job.id).lease_extended_until is not None
    assert c.query("SELECT runtimes FROM agents WHERE id = ?", reg.agent_id) == [
        ('{"native": "test-2"}',)
    ]
    # ... but only its own agent
    code, detail = _status(lambda: agent.register_agent(_body("other")))
    assert code == 403 and f"this token belongs to agent {reg.agent_id} ('proof'" in detail

    # the admin replaces it: new token, the lease goes back to the queue (not an attempt),
    # and never to the replaced process, not even by a long poll it had already sent
    polled: dict[str, httpx.Response] = {}
    poll = threading.Thread(
        target=lambda: polled.update(r=_post(c, "/agents/lease?wait=8", reg.token, timeout=30))
    )
    poll.start()
    time.sleep(1.0)  # the poll is waiting in the server
    replaced, successor = _register(c, "proof", replace=True)
    poll.join()
    assert polled["r"].status_code == 401, polled["r"].text
    assert "token was replaced while it waited" in polled["r"].json()["detail"]
    assert replaced.agent_id == reg.agent_id and replaced.token != reg.token
    assert _status(lambda: agent.heartbeat())[0] == 401
    code, _ = _status(lambda: agent.post_result(job.id, result_for(lease, [2.0, 2.0, 2.0])))
    assert code == 401
    requeued = c.client.get_job(job.id)
    assert (requeued.status, requeued.attempts, requeued.leased_by) == ("queued", 0, None)
    [(history,)] = c.query("SELECT history FROM jobs WHERE id = ?", job.id)
    event = json.loads(history)[-1]
    assert event["event"] == "lease dropped" and "replaced by the admin" in event["detail"]
    lease2 = successor.lease(wait=5)
    assert lease2 is not None and lease2.job_id == job.id
    successor.post_result(job.id, result_for(lease2, [2.0, 2.0, 2.0]))
    assert c.query("SELECT agent_id FROM results WHERE job_id = ?", job.id) == [(reg.agent_id,)]

    # an agent gone silent (nothing seen for long, no lease) may be taken over by enrolment
    c.query("UPDATE agents SET last_seen = '2000-01-01 00:00:00' WHERE id = ?", reg.agent_id)
    taken, newest = _register(c, "proof", token=enrol)
    assert taken.agent_id == reg.agent_id and taken.token != replaced.token
    assert newest.heartbeat().ok and _status(lambda: successor.heartbeat())[0] == 401


# ------------------------------------------------------------------ artifact downloads


def test_an_agent_downloads_only_the_artifact_of_its_lease(
    server: FileTokenCoordinator, artifact: ArtifactOut, tmp_path: Path
) -> None:
    c = server
    reg, agent = _register(c, "fetcher")
    _, bystander = _register(c, "bystander")
    code, detail = _status(lambda: agent.download_artifact(artifact.id, tmp_path / "a"))
    assert code == 403
    assert detail == (
        f"agent {reg.agent_id} leases no job of artifact {artifact.id}: an agent token may "
        "download only the artifact of a job it currently leases"
    )
    [job] = _jobs_for(c, artifact, reg)
    lease = agent.lease(wait=5)
    assert lease is not None and lease.artifact.id == artifact.id
    assert agent.download_artifact(artifact.id, tmp_path / "a") == artifact.sha256
    assert _status(lambda: bystander.download_artifact(artifact.id, tmp_path / "b"))[0] == 403
    assert c.client.download_artifact(artifact.id, tmp_path / "c") == artifact.sha256  # admin
    agent.post_result(job.id, result_for(lease, [3.0, 3.0, 3.0]))
    assert _status(lambda: agent.download_artifact(artifact.id, tmp_path / "a"))[0] == 403


# ------------------------------------------------------------------ the admin token


@pytest.mark.parametrize(
    "token, cause",
    [
        ("", "no admin token is set"),
        ("change-me", "is a placeholder"),
        ("CHANGE_ME_before_going_live", "is a placeholder"),
        ("s3cr3t-t0ken", "12 characters long; at least 16"),
        ("abababababababababab", "guessable"),
    ],
)
def test_guessable_admin_tokens_are_named(token: str, cause: str) -> None:
    problem = admin_token_problem(token)
    assert problem is not None and cause in problem
    assert admin_token_problem(secrets.token_hex(16)) is None
    assert admin_token_problem("test-admin-token") is None  # conftest's


@pytest.mark.slow  # three bnnbench serve processes
def test_the_coordinator_refuses_to_start_with_a_guessable_admin_token(tmp_path: Path) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("BNNBENCH_")}
    base["PYTHONPATH"] = str(REPO)
    runs = {
        # the default (no token at all)
        "unset": ([], {}),
        # on the command line: the warning, then the refusal (never a running server)
        "argv": (["--admin-token", "change-me"], {}),
        "file": (["--admin-token-file", str(tmp_path / "missing")], {}),
    }
    procs = {
        name: subprocess.Popen(
            [*BNNBENCH_SERVE, "--port", "9", "--data-dir", str(tmp_path / name), *args],
            env={**base, **env},
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, (args, env) in runs.items()
    }
    out = {name: p.communicate(timeout=120) for name, p in procs.items()}
    assert {name: p.returncode for name, p in procs.items()} == dict.fromkeys(runs, 2), out
    assert "refusing to start: no admin token is set" in out["unset"][1]
    assert "openssl rand -hex 16" in out["unset"][1]
    err = out["argv"][1]
    assert "--admin-token on the command line is visible to every user" in err
    assert "refusing to start: the admin token 'change-me' is a placeholder" in err
    assert f"token file {tmp_path / 'missing'} does not exist" in out["file"][1]


def test_the_admin_token_file_keeps_it_off_the_command_line(server: FileTokenCoordinator) -> None:
    assert server.proc is not None
    cmdline = Path(f"/proc/{server.proc.pid}/cmdline").read_bytes()
    assert server.admin_token.encode() not in cmdline
    assert server.client.health()["status"] == "ok"
    assert isinstance(server.client.enrolment_tokens(), list)  # the admin token works


# ------------------------------------------------------------------ token files


def test_token_files_are_read_strictly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    good = tmp_path / "good"
    good.write_text("  tok-123\n")
    good.chmod(0o600)
    assert read_token_file(good) == "tok-123" and not caplog.records
    good.chmod(0o644)
    assert read_token_file(good) == "tok-123"
    assert "can be read by other users (mode 644): chmod 600" in caplog.text
    for text, cause in (("", "is empty"), ("KEY=a b", "holds 2 words"), ("x" * 5000, "bytes")):
        (tmp_path / "bad").write_text(text)
        with pytest.raises(TokenFileError, match=cause):
            read_token_file(tmp_path / "bad")
    with pytest.raises(TokenFileError, match="is not a regular file"):
        read_token_file(tmp_path)
    assert client_token(None, good) == "tok-123"
    assert client_token(None, None, "env-tok") == "env-tok"
    assert client_token(None, None, "", good) == "tok-123"
    with pytest.raises(ValueError, match="not both"):
        client_token("a", good)
    with pytest.raises(ValueError, match="give one"):
        client_token(None, None, "env-tok", good)
    assert client_token("argv-tok", None) == "argv-tok"
    assert "--token on the command line is visible" in capsys.readouterr().err


# ------------------------------------------------------------------ real agents


@pytest.fixture
def started(tmp_path: Path) -> Iterator[Callable[..., AgentProcess]]:
    procs: list[AgentProcess] = []

    def start(c: CoordinatorProcess, name: str, root: Path, *extra: str, **kw: Any) -> AgentProcess:
        root.mkdir(parents=True, exist_ok=True)
        a = AgentProcess(c.url, kw.pop("token", None), name, root, *extra, **kw)
        procs.append(a)
        return a.start()

    yield start
    for a in procs:
        a.stop()


def _enrolment_file(c: FileTokenCoordinator, path: Path, **limits: Any) -> str:
    token = c.client.create_enrolment_token(**limits).token
    path.write_text(token + "\n")
    path.chmod(0o600)
    return token


def _device_of(c: CoordinatorProcess, a: AgentProcess) -> int:
    return int(a.identity()["device_id"])


@pytest.mark.slow  # a real agent process
def test_an_agent_with_a_token_file_works_and_shows_no_token(
    server: FileTokenCoordinator,
    artifact: ArtifactOut,
    started: Callable[..., AgentProcess],
    tmp_path: Path,
) -> None:
    c = server
    token_file = tmp_path / "enrol.token"
    enrol = _enrolment_file(c, token_file, max_uses=1)
    a = started(c, "filed", tmp_path / "filed", "--token-file", str(token_file))
    a.wait_log("registered as agent")
    agent_token = a.identity()["token"]
    [job] = c.client.create_jobs(artifact.model_id, "native", [1], device_id=_device_of(c, a))
    [done] = wait_jobs(c.client, [job.id], ctx_of(c, a))
    assert done.status == "done", done.error
    assert a.proc is not None and a.proc.poll() is None
    cmdline = Path(f"/proc/{a.proc.pid}/cmdline").read_bytes()
    assert str(token_file).encode() in cmdline
    assert enrol.encode() not in cmdline and agent_token.encode() not in cmdline
    assert "visible to every user" not in a.log()
    # a restart re-registers with its own token: the one-use enrolment token is not needed
    a.stop()
    token_file.unlink()
    b = started(c, "filed", tmp_path / "filed", "--token-file", str(token_file), "--once")
    b.wait_log("reusing identity")
    [job2] = c.client.create_jobs(artifact.model_id, "native", [1], device_id=_device_of(c, b))
    assert b.wait_exit() == 0, b.context()
    assert c.client.get_job(job2.id).status == "done"
    assert b.identity()["token"] == agent_token


def test_an_agent_token_on_the_command_line_is_warned_about(
    server: FileTokenCoordinator, started: Callable[..., AgentProcess], tmp_path: Path
) -> None:
    a = started(server, "argv", tmp_path / "argv", token="wrong-token-0123456789")
    assert a.wait_exit() == 2
    log = a.log()
    assert "warning: --token on the command line is visible to every user" in log
    assert "rejected the enrolment token (HTTP 401: invalid token" in log


@pytest.mark.slow
def test_two_agents_started_with_one_name_one_is_refused(
    server: FileTokenCoordinator,
    artifact: ArtifactOut,
    started: Callable[..., AgentProcess],
    tmp_path: Path,
) -> None:
    c = server
    token_file = tmp_path / "enrol.token"
    _enrolment_file(c, token_file)
    # queued first: whoever registers first leases at once while the other registers
    jobs = c.client.create_jobs(artifact.model_id, "native", [1, 2], runs=5)
    ids = [j.id for j in jobs]
    twins = [
        started(c, "twin", tmp_path / f"twin-{i}", "--token-file", str(token_file))
        for i in range(2)
    ]
    ctx = ctx_of(c, *twins)
    refused = wait_until(
        lambda: [t for t in twins if t.proc is not None and t.proc.poll() is not None],
        "one twin to be refused",
        context=ctx,
    )
    [loser] = refused
    [winner] = [t for t in twins if t is not loser]
    assert loser.wait_exit() == 2, ctx()
    log = loser.log()
    assert "registration of 'twin' refused (HTTP 409): an agent named 'twin'" in log, ctx()
    assert "give this one another --name" in log
    assert not (loser.cache_dir / "agent.json").exists()
    token = winner.identity()["token"]

    done = wait_jobs(c.client, ids, ctx)
    assert [j.status for j in done] == ["done", "done"], ctx()
    rows = c.query(
        f"SELECT job_id, agent_id FROM results WHERE job_id IN ({', '.join('?' * len(ids))})",
        *ids,
    )
    assert sorted(rows) == [(i, winner.agent_id) for i in ids]  # one result each, none lost
    assert winner.identity()["token"] == token  # no rotation, hence no ping-pong
    assert winner.log().count("registered as agent") == 1
    assert "rejected this agent's token" not in winner.log()
    assert c.query("SELECT count(*) FROM agents WHERE name = 'twin'") == [(1,)]
    rotations = [x for x in c.log_tail(5000).splitlines() if "'twin'" in x and "new token" in x]
    assert rotations == []
    assert winner.proc is not None and winner.proc.poll() is None


@pytest.mark.slow
def test_an_agent_replaced_by_the_admin_stops_instead_of_taking_its_name_back(
    server: FileTokenCoordinator,
    artifact: ArtifactOut,
    started: Callable[..., AgentProcess],
    tmp_path: Path,
) -> None:
    c = server
    token_file = tmp_path / "enrol.token"
    _enrolment_file(c, token_file)
    old = started(c, "swap", tmp_path / "old", "--token-file", str(token_file))
    old.wait_log("registered as agent")
    # the operator replaces it (the admin token through the environment, not argv)
    new = started(
        c, "swap", tmp_path / "new", "--replace", env={"BNNBENCH_AGENT_TOKEN": c.admin_token}
    )
    ctx = ctx_of(c, old, new)
    new.wait_log("registered as agent")
    assert new.agent_id == old.agent_id and new.identity()["token"] != old.identity()["token"]
    assert old.wait_exit() == 2, ctx()
    log = old.log()
    assert "the coordinator rejected this agent's token; registering again" in log
    assert "registration of 'swap' refused (HTTP 409)" in log
    token = new.identity()["token"]
    [job] = c.client.create_jobs(artifact.model_id, "native", [1], device_id=_device_of(c, new))
    [done] = wait_jobs(c.client, [job.id], ctx)
    assert done.status == "done" and new.identity()["token"] == token
    assert c.query("SELECT agent_id FROM results WHERE job_id = ?", job.id) == [(new.agent_id,)]
    assert "visible to every user" not in new.log()

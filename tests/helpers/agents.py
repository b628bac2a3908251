"""Real agent processes for end-to-end tests: ``bnnbench agent`` in a subprocess with its own
cache dir and log, and waits that poll the API with generous deadlines (nothing asserts a
duration)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import wait_for

from bnnbench.client import BnnbenchClient
from bnnbench.schemas import JobOut

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "bnnbench.cli"]


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``bnnbench ARGS`` from the repository root, output captured, exit status kept."""
    return subprocess.run(
        [*CLI, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env
    )


WAIT = 120.0  # deadline of every wait; only reached when something is broken


def wait_until(
    cond: Callable[[], Any],
    what: str,
    timeout: float = WAIT,
    context: Callable[[], str] = lambda: "",
) -> Any:
    return wait_for(cond, timeout, what, context, poll=0.05)


class AgentProcess:
    """`bnnbench agent` in a subprocess with its own cache dir and log file; ``token`` None
    passes no ``--token`` (give ``--token-file`` in ``extra``, or the variable in ``env``)."""

    def __init__(
        self,
        url: str,
        token: str | None,
        name: str,
        root: Path,
        *extra: str,
        env: dict[str, str] | None = None,
    ) -> None:
        self.url, self.token, self.name = url, token, name
        self.extra_env = dict(env or {})
        self.cache_dir = root / f"agent-{name}"  # same name, same cache dir (and identity)
        n = len(list(root.glob(f"agent-{name}-*.log")))
        self.log_path = root / f"agent-{name}-{n}.log"
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> AgentProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BNNBENCH_")}
        env["PYTHONPATH"] = os.pathsep.join(p for p in [str(REPO), env.get("PYTHONPATH")] if p)
        env.update(self.extra_env)
        cmd = [
            *CLI,
            "agent",
            "--coordinator",
            self.url,
            *(["--token", self.token] if self.token is not None else []),
            "--name",
            self.name,
            "--cache-dir",
            str(self.cache_dir),
            "--heartbeat-seconds",
            "0.5",
            "--max-backoff-seconds",
            "0.5",
            "--poll-wait-seconds",
            "2",
            *self.extra,
        ]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        return self

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def context(self) -> str:
        return f"--- log of agent {self.name}:\n{self.log()[-6000:]}"

    def wait_log(self, text: str, timeout: float = WAIT) -> None:
        wait_until(
            lambda: text in self.log(), f"{text!r} in the log of {self.name}", timeout, self.context
        )

    def identity(self) -> dict[str, Any]:
        path = self.cache_dir / "agent.json"
        wait_until(path.exists, f"{path}", context=self.context)
        return json.loads(path.read_text())

    @property
    def agent_id(self) -> int:
        return int(self.identity()["agent_id"])

    def outbox(self) -> list[Path]:
        return sorted((self.cache_dir / "outbox").glob("job-*.json"))

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float = WAIT) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"agent {self.name} did not exit\n{self.context()}") from None

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def wait_jobs(
    client: BnnbenchClient,
    ids: list[int],
    context: Callable[[], str],
    status: tuple[str, ...] = ("done", "failed"),
) -> list[JobOut]:
    def check() -> list[JobOut] | None:
        jobs = client.list_jobs(ids=ids)
        return jobs if all(j.status in status for j in jobs) else None

    return wait_until(check, f"jobs {ids} to reach {status}", context=context)


def result_rows(coord: Any, job_id: int) -> list[tuple[Any, ...]]:
    return coord.query("SELECT agent_id, samples_ms FROM results WHERE job_id = ?", job_id)


def ctx_of(coord: Any, *agents: AgentProcess) -> Callable[[], str]:
    return lambda: "\n".join(
        [a.context() for a in agents] + [f"--- coordinator log:\n{coord.log_tail(40)}"]
    )

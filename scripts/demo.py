"""`make demo`: the whole path on this machine.

Starts the coordinator (SQLite under ./var) and one local agent, writes the model zoo, submits
it for the native engine and Larq Compute Engine at 1 and 2 threads, follows the jobs, prints
the hardware-track table and OM, then stops both processes. Every latency in the table was
measured by the agent and posted through the REST API; results stay in ./var (logs in
./var/logs).
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

VAR = Path("var")
CLI = [sys.executable, "-m", "bnnbench.cli"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _admin_token() -> str:
    path = VAR / "admin-token"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(24))
        path.chmod(0o600)
    return path.read_text().strip()


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"coordinator exited with {proc.returncode}; see var/logs/")
        try:
            if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit("coordinator did not become healthy; see var/logs/")


def _spawn(args: list[str], log_name: str, env: dict) -> subprocess.Popen:
    # the child keeps its own copy of the log's file descriptor
    with open(VAR / "logs" / log_name, "ab") as log:
        return subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main() -> int:
    (VAR / "logs").mkdir(parents=True, exist_ok=True)
    token = _admin_token()
    port = int(os.environ.get("BNNBENCH_DEMO_PORT") or _free_port())
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "BNNBENCH_ADMIN_TOKEN": token,
        "BNNBENCH_COORDINATOR": url,
        "BNNBENCH_TOKEN": token,
    }
    threads = os.environ.get("BNNBENCH_DEMO_THREADS", "1 2").split()
    libraries = os.environ.get("BNNBENCH_DEMO_LIBRARIES", "native lce").split()
    server = agent = None
    try:
        print(f"== coordinator on {url} (data in {VAR}/, log var/logs/coordinator.log)")
        server = _spawn(
            [*CLI, "serve", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(VAR)],
            "coordinator.log",
            env,
        )
        _wait_healthy(url, server)
        print("== local agent (log var/logs/agent.log)")
        agent = _spawn(
            [
                *CLI,
                "agent",
                "--coordinator",
                url,
                "--token",
                token,
                "--cache-dir",
                str(VAR / "agent-cache"),
            ],
            "agent.log",
            env,
        )
        print("== model zoo -> var/zoo")
        subprocess.run([*CLI, "zoo", str(VAR / "zoo")], env=env, check=True)
        print(f"== submitting the zoo for {', '.join(libraries)} at threads {', '.join(threads)}")
        thread_opts = [a for t in threads for a in ("--threads", t)]
        library_opts = [a for lib in libraries for a in ("--library", lib)]
        submit = subprocess.run(
            [
                *CLI,
                "submit",
                str(VAR / "zoo"),
                *library_opts,
                *thread_opts,
                "--warmup",
                "2",
                "--runs",
                "5",
                "--wait",
            ],
            env=env,
        )
        print("== hardware-track table (median latency, ms) and OM")
        subprocess.run([*CLI, "results"], env=env, check=True)
        return submit.returncode
    finally:
        _stop(agent)
        _stop(server)


if __name__ == "__main__":
    sys.exit(main())

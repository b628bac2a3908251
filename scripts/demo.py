"""`make demo`: the whole path on this machine.

Starts the coordinator (SQLite under ./var), writes the model zoo, submits it for the native
engine and Larq Compute Engine at 1 and 2 threads, waits until every artifact is converted
(and every model analysed), and only then starts one local agent: conversions and
measurements never share this machine's cores (the coordinator also holds local jobs back
while conversion work is outstanding: coordinator.colocation). Follows the jobs, prints the
hardware-track table and OM, then stops both processes. Every latency in the table was
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
from collections import Counter
from pathlib import Path

import httpx

from bnnbench.client import BnnbenchClient
from bnnbench.schemas import JobOut

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


def _wait_conversions(client: BnnbenchClient, poll: float = 1.0) -> None:
    """Until no artifact is pending or converting and no model is being analysed."""
    shown = None
    while True:
        arts = client.list_artifacts()
        busy = Counter(a.status.value for a in arts if a.status in ("pending", "converting"))
        analysing = sum(m.analysis_status in ("pending", "running") for m in client.list_models())
        state = (busy.get("pending", 0), busy.get("converting", 0), analysing)
        if state != shown:
            ready = sum(a.status == "ready" for a in arts)
            print(
                f"   artifacts: {ready} ready, {state[1]} converting, {state[0]} pending; "
                f"{analysing} model analyses to go",
                flush=True,
            )
            shown = state
        if not any(state):
            break
        time.sleep(poll)
    for a in arts:
        if a.status == "failed":
            print(f"   artifact {a.id} ({a.library.value}, model {a.model_id}) failed: {a.error}")


def _follow(client: BnnbenchClient, jobs: list[JobOut], agent: subprocess.Popen) -> int:
    """Follow the jobs until done or failed; returns how many failed."""
    shown: dict[str, int] = {}

    def update(current: list[JobOut]) -> None:
        nonlocal shown
        counts = Counter(j.status.value for j in current)
        if counts != shown:
            print(
                "   jobs: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())), flush=True
            )
            shown = dict(counts)
        if agent.poll() is not None:
            raise SystemExit(f"the agent exited with {agent.returncode}; see var/logs/agent.log")

    final = client.wait_jobs([j.id for j in jobs], poll=2.0, on_update=update)
    failed = [j for j in final if j.status == "failed"]
    names = {m.id: m.name for m in client.list_models()}
    for j in failed:
        print(
            f"   job {j.id} ({names.get(j.model_id, j.model_id)}, {j.library.value}, "
            f"{j.threads} threads) failed: {j.error}"
        )
    remeasured = sum(1 for j in final if j.remeasures)
    print(
        f"   {len(final) - len(failed)} done, {len(failed)} failed; "
        f"{remeasured} re-measured after an invalid (noisy or throttled) result"
    )
    return len(failed)


def main() -> int:
    (VAR / "logs").mkdir(parents=True, exist_ok=True)
    token = _admin_token()
    port = int(os.environ.get("BNNBENCH_DEMO_PORT") or _free_port())
    url = f"http://127.0.0.1:{port}"
    env = {
        # a 2-thread run on a 2-core machine shares its cores with everything else running
        # there: one more re-measurement (twice the runs again) than the default before a
        # cell is left out as too noisy
        "BNNBENCH_MAX_REMEASURES": "3",
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
        print("== model zoo -> var/zoo")
        subprocess.run([*CLI, "zoo", str(VAR / "zoo")], env=env, check=True)
        with BnnbenchClient(url, token) as client:
            first_job = max((j.id for j in client.list_jobs()), default=0) + 1
            print(
                f"== submitting the zoo for {', '.join(libraries)} at threads {', '.join(threads)}"
            )
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
                    # the verdict wants the median known to ±5 % (its 95 % interval): at least
                    # 20 runs and at least 2 s of them, so a fast model gets hundreds of
                    # samples and a burst of other load on a small machine cannot move it
                    "--runs",
                    "20",
                    "--min-time-ms",
                    "2000",
                ],
                env=env,
            )
            if submit.returncode != 0:
                raise SystemExit(f"bnnbench submit failed ({submit.returncode})")
            print(
                "== converting every artifact before any measurement (log var/logs/coordinator.log)"
            )
            _wait_conversions(client)
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
            jobs = [j for j in client.list_jobs() if j.id >= first_job]
            failed = _follow(client, jobs, agent)
        print("== hardware-track table (median latency, ms) and OM")
        subprocess.run([*CLI, "results"], env=env, check=True)
        return 1 if failed else 0
    finally:
        _stop(agent)
        _stop(server)


if __name__ == "__main__":
    sys.exit(main())

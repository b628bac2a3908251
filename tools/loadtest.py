"""Load test of the coordinator's agent API (issue 14): N simulated agents on loopback pull M
jobs through REST, or long-poll with no jobs at all (``--idle``). A benchmark, not a test: it
prints what it measured and checks that every job completed exactly once.

    python tools/loadtest.py --agents 1000 --jobs 10000                  # SQLite
    python tools/loadtest.py --backend postgres --coordinators 2 --agents 1000
    python tools/loadtest.py --idle 30 --agents 500 --wait 5            # idle long polls
    python tools/loadtest.py --agents 50 --jobs 500 --json out.json

It starts its own coordinator process(es) (``python -m coordinator``, as the tests do) with a
fresh data dir and database; for PostgreSQL a throwaway server (tests/helpers/postgres.py).
The model, its ready artifact and the M queued jobs are written straight into the database
(setup, not measured); everything measured goes through the REST API: registration with an
enrolment token, ``POST /agents/lease?wait=W``, ``POST /jobs/{id}/result``. Each simulated
agent is one asyncio task with its own httpx client and one connection, as a real agent has,
on its own device (one lease per device). Two coordinators share one PostgreSQL database and
the agents are split between them. docs/loadtest.md explains the report.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import math
import os
import random
import resource
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: the repository's packages come first
    sys.path.insert(0, str(REPO))

from bnnbench.schemas import API_PREFIX, Endpoint, ResultIn  # noqa: E402

ADMIN_TOKEN = "loadtest-admin-token-0123456789"
# the agent's own limits (agent/daemon.py): its client's timeout for register/result, the
# lease call's (wait + 30 s, bnnbench/client.py) and the heartbeat client's (10 s)
AGENT_TIMEOUT_S = 30.0
LEASE_TIMEOUT_EXTRA_S = 30.0
HEARTBEAT_TIMEOUT_S = 10.0
# the job's runs and the samples posted: enough for a valid verdict (no re-measure)
RUNS = 6
SAMPLES_MS = [1.00, 1.01, 0.99, 1.00, 1.02, 1.00]


# ------------------------------------------------------------------ numbers


def percentile(xs: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of ``xs``; None when empty."""
    if not xs:
        return None
    s = sorted(xs)
    k = max(0, min(len(s) - 1, math.ceil(q / 100 * len(s)) - 1))
    return s[k]


def summary(xs: list[float]) -> dict[str, Any]:
    return {
        "n": len(xs),
        "p50_s": percentile(xs, 50),
        "p99_s": percentile(xs, 99),
        "max_s": max(xs) if xs else None,
    }


def steady_rate(times: list[float], lo: float = 0.1, hi: float = 0.9) -> float | None:
    """Events per second between the ``lo`` and ``hi`` fractions of ``times`` (monotonic
    seconds): the rate without the ramp-up and the tail where agents run out of jobs."""
    if len(times) < 10:
        return None
    s = sorted(times)
    i, j = int(lo * (len(s) - 1)), int(hi * (len(s) - 1))
    span = s[j] - s[i]
    return (j - i) / span if span > 0 else None


# ------------------------------------------------------------------ CPU from /proc

CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its reaped children (0 when gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # after the command: state is field 3, utime 14, stime 15, cutime 16, cstime 17
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / CLK_TCK


def children_of(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            out.append(int(entry.name))
    return out


def self_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


@dataclass
class CpuMeter:
    """CPU seconds of named process groups over a phase of the run."""

    groups: dict[str, list[int]] = field(default_factory=dict)  # name -> pids (children too)

    def sample(self) -> dict[str, float]:
        out = {"loadgen": self_cpu_s()}
        for name, pids in self.groups.items():
            total = 0.0
            for pid in pids:
                total += proc_cpu_s(pid) + sum(proc_cpu_s(c) for c in children_of(pid))
            out[name] = total
        return out


def cpu_phase(before: dict[str, float], after: dict[str, float], wall: float) -> dict[str, Any]:
    used = {k: round(after[k] - before.get(k, 0.0), 2) for k in after}
    return {
        "wall_s": round(wall, 2),
        "cpu_s": used,
        "cores": {k: round(v / wall, 2) if wall > 0 else None for k, v in used.items()},
    }


# ------------------------------------------------------------------ the coordinator(s)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Coordinator:
    data_dir: Path
    settings: dict[str, Any]
    log_level: str = "warning"
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("BNNBENCH_")}
        env.update({f"BNNBENCH_{k.upper()}": str(v) for k, v in self.settings.items()})
        env["BNNBENCH_ADMIN_TOKEN"] = ADMIN_TOKEN
        env["PYTHONPATH"] = os.pathsep.join(p for p in [str(REPO), env.get("PYTHONPATH")] if p)
        cmd = [sys.executable, "-m", "coordinator", "--host", "127.0.0.1"]
        cmd += ["--port", str(self.port), "--data-dir", str(self.data_dir)]
        cmd += ["--log-level", self.log_level]
        with open(self.data_dir / "server.log", "ab") as log:
            self.proc = subprocess.Popen(
                cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"coordinator exited with {self.proc.returncode}:\n{self.tail()}"
                )
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/health", timeout=2.0).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"coordinator not healthy after {timeout} s:\n{self.tail()}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def tail(self, n: int = 40) -> str:
        try:
            lines = (self.data_dir / "server.log").read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-n:])


def postmaster_pid(root: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int((root / "data" / "postmaster.pid").read_text().splitlines()[0])
    return None


def raise_nofile(agents: int) -> None:
    """Each agent holds a socket here and one in the coordinator (a child: it inherits)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 2 * agents + 1024
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))


# ------------------------------------------------------------------ setup rows (not measured)


def setup_jobs(data_dir: Path, database_url: str | None, n_jobs: int) -> None:
    """A model with a ready ``native`` artifact and ``n_jobs`` queued jobs for any device,
    written straight into the coordinator's database (schema made by the coordinator)."""
    from sqlalchemy import insert

    from bnnbench.settings import CoordinatorSettings
    from coordinator.db import Database
    from coordinator.models import Artifact, Job, Model, utcnow

    db = Database(CoordinatorSettings(data_dir=data_dir, database_url=database_url))
    try:
        with db.session() as s:
            m = Model(name="loadtest", sha256="a" * 64, size=1, analysis_status="done")
            s.add(m)
            s.flush()
            art = Artifact(model_id=m.id, library="native", status="ready", sha256="b" * 64, size=1)
            s.add(art)
            s.flush()
            now = utcnow()
            row = {
                "model_id": m.id,
                "library": "native",
                "artifact_id": art.id,
                "threads": 1,
                "device_id": None,
                "warmup": 1,
                "runs": RUNS,
                "status": "queued",
                "attempts": 0,
                "remeasures": 0,
                "history": [],
                "created_at": now,
                "updated_at": now,
            }
            for start in range(0, n_jobs, 1000):
                s.execute(insert(Job), [row] * min(1000, n_jobs - start))
    finally:
        db.dispose()


def verify(data_dir: Path, database_url: str | None, n_jobs: int) -> dict[str, Any]:
    """What the database holds at the end: every job done with exactly one (valid) result,
    leased exactly once, none lost."""
    from sqlalchemy import func, select

    from bnnbench.settings import CoordinatorSettings
    from coordinator.db import Database
    from coordinator.models import Job, Result

    db = Database(CoordinatorSettings(data_dir=data_dir, database_url=database_url))
    try:
        with db.session() as s:
            statuses = dict(s.execute(select(Job.status, func.count()).group_by(Job.status)).all())
            per_job = dict(
                s.execute(select(Result.job_id, func.count()).group_by(Result.job_id)).all()
            )
            invalid = s.scalar(select(func.count()).where(Result.valid.is_(False))) or 0
            job_ids = list(s.scalars(select(Job.id)))
            leased_twice = 0
            for hist in s.scalars(select(Job.history)):
                if sum(1 for e in hist or [] if e.get("event") == "leased") != 1:
                    leased_twice += 1
    finally:
        db.dispose()
    duplicated = sum(1 for n in per_job.values() if n > 1)
    lost = sum(1 for j in job_ids if per_job.get(j, 0) == 0)
    ok = (
        len(job_ids) == n_jobs
        and statuses.get("done", 0) == n_jobs
        and duplicated == 0
        and lost == 0
        and invalid == 0
        and sum(per_job.values()) == n_jobs
    )
    return {
        "ok": ok,
        "jobs": len(job_ids),
        "statuses": statuses,
        "results": sum(per_job.values()),
        "lost": lost,
        "duplicated": duplicated,
        "invalid_results": invalid,
        "jobs_not_leased_exactly_once": leased_twice,
    }


# ------------------------------------------------------------------ simulated agents


@dataclass
class Stats:
    register: list[float] = field(default_factory=list)
    lease: list[float] = field(default_factory=list)  # 200 answers
    lease_204: list[float] = field(default_factory=list)
    result: list[float] = field(default_factory=list)
    heartbeat: list[float] = field(default_factory=list)
    lease_times: list[float] = field(default_factory=list)  # monotonic, at each 200 lease
    errors: Counter[str] = field(default_factory=Counter)
    leased: Counter[int] = field(default_factory=Counter)  # job id -> leases seen
    accepted: Counter[int] = field(default_factory=Counter)  # job id -> results accepted
    last_progress: float = field(default_factory=time.monotonic)

    def error(self, what: str, r: httpx.Response | BaseException) -> None:
        key = f"{what} {r.status_code}" if isinstance(r, httpx.Response) else f"{what} {r!r:.80}"
        self.errors[key] += 1


def device_info(i: int) -> dict[str, Any]:
    # a fingerprint of its own per agent (no stable identity: the hostname makes it)
    return {
        "hostname": f"loadtest-{i:05d}",
        "arch": "x86_64",
        "os": "Linux loadtest",
        "cpu_model": "Simulated CPU",
        "cores": 4,
        "transport": "local",
    }


@functools.cache
def _tls() -> ssl.SSLContext:
    # one context for every client (plain HTTP on loopback never uses it): httpx builds one
    # per client otherwise, loading the CA store each time (minutes for 2000 clients)
    return ssl.create_default_context()


class Agent:
    def __init__(self, i: int, url: str, args: argparse.Namespace, stats: Stats) -> None:
        self.i, self.wait, self.stats = i, args.wait, stats
        self.beat = args.heartbeat
        # one connection each, kept alive: the agent's own client and its heartbeat thread's
        one = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        kw: dict[str, Any] = {"base_url": url + API_PREFIX, "limits": one, "verify": _tls()}
        self.http = httpx.AsyncClient(timeout=AGENT_TIMEOUT_S, **kw)
        self.hb_http = httpx.AsyncClient(timeout=HEARTBEAT_TIMEOUT_S, **kw)
        self.token = ""
        self.job: int | None = None  # the job a heartbeat names (its lease is extended)
        self.polling_since: float | None = None  # an open lease poll (agent/daemon.py)
        self.job_seconds: float = args.job_seconds

    async def aclose(self) -> None:
        await self.http.aclose()
        await self.hb_http.aclose()

    async def register(self, enrol_token: str) -> bool:
        body = {"name": "loadtest", "device": device_info(self.i), "runtimes": {"native": "lt"}}
        t0 = time.monotonic()
        try:
            r = await self.http.post(
                Endpoint.AGENT_REGISTER,
                json=body,
                headers={"Authorization": f"Bearer {enrol_token}"},
            )
        except httpx.HTTPError as exc:
            self.stats.error("register", exc)
            return False
        if r.status_code != 200:
            self.stats.error("register", r)
            return False
        self.stats.register.append(time.monotonic() - t0)
        self.token = r.json()["token"]
        self.http.headers["Authorization"] = f"Bearer {self.token}"
        self.hb_http.headers["Authorization"] = f"Bearer {self.token}"
        return True

    async def heartbeats(self) -> None:
        """Every ``--heartbeat`` seconds, as the agent's heartbeat thread (the first at a
        random point of the interval: agents do not start in step)."""
        await asyncio.sleep(random.uniform(0, self.beat))
        while True:
            t0 = time.monotonic()
            polling = self.polling_since
            if self.job is None and polling is not None and t0 - polling < 15.0:
                # as the agent: an idle agent's open long poll already marks it alive
                await asyncio.sleep(self.beat)
                continue
            try:
                r = await self.hb_http.post(Endpoint.AGENT_HEARTBEAT, json={"job_id": self.job})
            except httpx.HTTPError as exc:
                self.stats.error("heartbeat", exc)
            else:
                if r.status_code == 200:
                    self.stats.heartbeat.append(time.monotonic() - t0)
                elif r.status_code != 409:  # 409: the job just finished (the agent ignores it)
                    self.stats.error("heartbeat", r)
            await asyncio.sleep(max(0.0, self.beat - (time.monotonic() - t0)))

    async def lease_once(self) -> dict[str, Any] | None:
        t0 = self.polling_since = time.monotonic()
        try:
            r = await self.http.post(
                Endpoint.AGENT_LEASE,
                params={"wait": self.wait},
                timeout=self.wait + LEASE_TIMEOUT_EXTRA_S,
            )
        except httpx.HTTPError as exc:
            self.stats.error("lease", exc)
            await asyncio.sleep(1.0)  # the agent backs off after a failed call
            return None
        finally:
            self.polling_since = None
        dt = time.monotonic() - t0
        if r.status_code == 204:
            self.stats.lease_204.append(dt)
            return None
        if r.status_code != 200:
            self.stats.error("lease", r)
            await asyncio.sleep(1.0)
            return None
        self.stats.lease.append(dt)
        self.stats.lease_times.append(time.monotonic())
        lease: dict[str, Any] = r.json()
        self.job = lease["job_id"]
        self.stats.leased[lease["job_id"]] += 1
        self.stats.last_progress = time.monotonic()
        return lease

    async def post_result(self, lease: dict[str, Any]) -> None:
        body = ResultIn(
            lease_id=lease["lease_id"], samples_ms=SAMPLES_MS, runtime_version="loadtest"
        ).model_dump(mode="json")
        path = Endpoint.JOB_RESULT.format(job_id=lease["job_id"])
        t0 = time.monotonic()
        try:
            r = await self.http.post(path, json=body)
        except httpx.HTTPError as exc:
            self.stats.error("result", exc)
            return
        finally:
            self.job = None
        if r.status_code != 200:
            self.stats.error("result", r)
            return
        self.stats.result.append(time.monotonic() - t0)
        self.stats.accepted[lease["job_id"]] += 1
        self.stats.last_progress = time.monotonic()

    async def work(self, done: asyncio.Event, idle_until: float | None = None) -> None:
        while not done.is_set():
            if idle_until is not None and time.monotonic() >= idle_until:
                return
            lease = await self.lease_once()
            if lease is not None:
                if self.job_seconds > 0:  # the measurement a real agent would make
                    await asyncio.sleep(self.job_seconds)
                await self.post_result(lease)


async def run_agents(
    urls: list[str], args: argparse.Namespace, meter: CpuMeter
) -> tuple[Stats, dict[str, Any]]:
    stats = Stats()
    async with httpx.AsyncClient(base_url=urls[0] + API_PREFIX, timeout=60) as admin:
        r = await admin.post(
            Endpoint.ENROLMENT_TOKENS,
            json={"note": "loadtest"},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        r.raise_for_status()
        enrol = r.json()["token"]
    agents = [Agent(i, urls[i % len(urls)], args, stats) for i in range(args.agents)]
    phases: dict[str, Any] = {}
    try:
        # every agent registers at once (a fleet coming back after a coordinator restart)
        c0, t0 = meter.sample(), time.monotonic()
        ok = await asyncio.gather(*(a.register(enrol) for a in agents))
        phases["register"] = cpu_phase(c0, meter.sample(), time.monotonic() - t0)
        agents = [a for a, good in zip(agents, ok, strict=True) if good]
        done = asyncio.Event()
        c0, t0 = meter.sample(), time.monotonic()
        idle_until = t0 + args.idle if args.idle else None
        stats.last_progress = t0
        tasks = [asyncio.create_task(a.work(done, idle_until)) for a in agents]
        beats = [asyncio.create_task(a.heartbeats()) for a in agents if args.heartbeat > 0]
        while not all(t.done() for t in tasks):
            await asyncio.sleep(0.2)
            now = time.monotonic()
            if not args.idle and len(stats.accepted) >= args.jobs:
                break
            if not args.idle and now - stats.last_progress > args.stall_seconds:
                stats.errors["run: no progress for stall_seconds, stopped"] += 1
                break
            if now - t0 > args.timeout:
                stats.errors["run: timeout, stopped"] += 1
                break
        wall = time.monotonic() - t0
        phases["idle" if args.idle else "jobs"] = cpu_phase(c0, meter.sample(), wall)
        done.set()
        for t in [*tasks, *beats]:
            t.cancel()
        await asyncio.gather(*tasks, *beats, return_exceptions=True)
    finally:
        await asyncio.gather(*(a.aclose() for a in agents), return_exceptions=True)
    return stats, phases


# ------------------------------------------------------------------ the run


@contextlib.contextmanager
def backend(args: argparse.Namespace, root: Path) -> Iterator[tuple[str | None, int | None]]:
    """The database URL (None: SQLite in the data dir) and the PostgreSQL server's pid."""
    if args.backend == "sqlite":
        yield None, None
        return
    from tests.helpers.postgres import postgres_server, unavailable

    why = unavailable()
    if why:
        raise SystemExit(f"error: {why}")
    with postgres_server() as server:
        yield server.create_database("loadtest"), postmaster_pid(server.root)


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.backend == "sqlite" and args.coordinators != 1:
        raise SystemExit("error: SQLite serves one coordinator (docs/architecture.md)")
    raise_nofile(args.agents)
    root = Path(tempfile.mkdtemp(prefix="bnnbench-loadtest-"))
    coords: list[Coordinator] = []
    try:
        with backend(args, root) as (url, pg_pid):
            settings: dict[str, Any] = {
                "conversion_workers": 0,  # no conversion in this run (artifact made ready)
                "lease_seconds": args.lease_seconds,
                "long_poll_seconds": max(args.wait, 1.0),
            }
            if url is not None:
                settings["database_url"] = url
            for item in args.set:  # any other CoordinatorSettings field, as BNNBENCH_<KEY>
                key, _, value = item.partition("=")
                settings[key.strip().lower()] = value
            for i in range(args.coordinators):
                c = Coordinator(root / f"coordinator-{i}", settings, log_level=args.log_level)
                coords.append(c)
                c.start()  # one after the other: the first one makes the schema
            if not args.idle:
                setup_jobs(coords[0].data_dir, url, args.jobs)
            meter = CpuMeter({"coordinators": [c.proc.pid for c in coords if c.proc]})
            if pg_pid is not None:
                meter.groups["postgres"] = [pg_pid]
            stats, phases = asyncio.run(run_agents([c.url for c in coords], args, meter))
            check = None if args.idle else verify(coords[0].data_dir, url, args.jobs)
            for c in coords:
                if c.proc is not None and c.proc.poll() is not None:
                    stats.errors[f"coordinator exited with {c.proc.returncode}"] += 1
    finally:
        for c in coords:
            c.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return report(args, stats, phases, check, root if args.keep else None)


def report(
    args: argparse.Namespace,
    stats: Stats,
    phases: dict[str, Any],
    check: dict[str, Any] | None,
    kept: Path | None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "config": {
            "mode": "idle" if args.idle else "jobs",
            "backend": args.backend,
            "coordinators": args.coordinators,
            "agents": args.agents,
            "jobs": 0 if args.idle else args.jobs,
            "wait_s": args.wait,
            "heartbeat_s": args.heartbeat,
            "job_seconds": args.job_seconds,
            "idle_s": args.idle,
            "lease_seconds": args.lease_seconds,
            "log_level": args.log_level,
            "coordinator_settings": args.set,
            "cpus": os.cpu_count(),
            "loadavg_at_end": os.getloadavg(),
        },
        "latency": {
            "register": summary(stats.register),
            "lease": summary(stats.lease),
            "lease_204": summary(stats.lease_204),
            "result": summary(stats.result),
            "heartbeat": summary(stats.heartbeat),
        },
        "errors": dict(stats.errors),
        "phases": phases,
    }
    if kept is not None:
        out["config"]["kept"] = str(kept)
    limits = {"register": AGENT_TIMEOUT_S, "result": AGENT_TIMEOUT_S}
    limits["lease"] = args.wait + LEASE_TIMEOUT_EXTRA_S
    limits["heartbeat"] = HEARTBEAT_TIMEOUT_S
    out["agent_timeouts_s"] = limits
    out["p99_within_agent_timeouts"] = all(
        (out["latency"][k]["p99_s"] or 0.0) < v for k, v in limits.items()
    )
    if args.idle:
        idle = phases.get("idle", {})
        out["idle"] = {
            "polls_answered_204": len(stats.lease_204),
            "coordinator_cores": idle.get("cores", {}).get("coordinators"),
            "late_204_p50_s": _minus(percentile(stats.lease_204, 50), args.wait),
            "late_204_p99_s": _minus(percentile(stats.lease_204, 99), args.wait),
        }
    else:
        wall = phases.get("jobs", {}).get("wall_s") or 0.0
        client_dups = sum(1 for n in stats.accepted.values() if n > 1)
        out["throughput"] = {
            "leases": len(stats.lease),
            "leases_per_s_steady": _round(steady_rate(stats.lease_times)),
            "leases_per_s_overall": _round(len(stats.lease) / wall if wall else None),
            "results_accepted": sum(stats.accepted.values()),
            "jobs_leased_twice_seen_by_agents": sum(1 for n in stats.leased.values() if n > 1),
            "jobs_accepted_twice_seen_by_agents": client_dups,
        }
        out["exactly_once"] = check
    return out


def _round(x: float | None, nd: int = 1) -> float | None:
    return None if x is None else round(x, nd)


def _minus(x: float | None, y: float) -> float | None:
    return None if x is None else round(x - y, 3)


def _fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.3f}"
    return str(x)


def print_table(out: dict[str, Any]) -> None:
    cfg = out["config"]
    print(
        f"\nbackend {cfg['backend']} x{cfg['coordinators']} coordinator(s), {cfg['agents']} "
        f"agents, {cfg['jobs']} jobs, wait {cfg['wait_s']} s ({cfg['mode']})"
    )
    print(f"{'call':<10} {'n':>7} {'p50 s':>8} {'p99 s':>8} {'max s':>8}")
    for name, st in out["latency"].items():
        row = [_fmt(st["n"]), _fmt(st["p50_s"]), _fmt(st["p99_s"]), _fmt(st["max_s"])]
        print(f"{name:<10} {row[0]:>7} {row[1]:>8} {row[2]:>8} {row[3]:>8}")
    for name, ph in out["phases"].items():
        cpu = ", ".join(f"{k} {v} s ({ph['cores'][k]} cores)" for k, v in ph["cpu_s"].items())
        print(f"phase {name}: {ph['wall_s']} s wall; CPU {cpu}")
    if "throughput" in out:
        t = out["throughput"]
        print(
            f"leases/s steady {_fmt(t['leases_per_s_steady'])}, overall "
            f"{_fmt(t['leases_per_s_overall'])} ({t['leases']} leases)"
        )
        e = out["exactly_once"]
        verdict = "OK" if e["ok"] else "FAILED"
        print(
            f"exactly once: {verdict} (jobs {e['jobs']}, results {e['results']}, lost "
            f"{e['lost']}, duplicated {e['duplicated']}, invalid {e['invalid_results']}, "
            f"not leased exactly once {e['jobs_not_leased_exactly_once']}; {e['statuses']})"
        )
    if "idle" in out:
        i = out["idle"]
        print(
            f"idle: coordinator {i['coordinator_cores']} cores; 204 after wait + "
            f"{_fmt(i['late_204_p50_s'])} s (p50), + {_fmt(i['late_204_p99_s'])} s (p99)"
        )
    print(f"p99 within the agent's timeouts: {out['p99_within_agent_timeouts']}")
    print(f"errors: {out['errors'] or 'none'}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--agents", type=int, default=1000, help="simulated agents (default 1000)")
    p.add_argument("--jobs", type=int, default=10_000, help="queued jobs (default 10000)")
    p.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    p.add_argument("--coordinators", type=int, choices=(1, 2), default=1)
    p.add_argument("--wait", type=float, default=20.0, help="lease?wait= seconds (default 20)")
    p.add_argument(
        "--idle",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="idle mode: no jobs; agents long-poll for SECONDS (CPU, 204 latency)",
    )
    p.add_argument(
        "--heartbeat",
        type=float,
        default=10.0,
        help="seconds between an agent's heartbeats, as the agent's default (0: none)",
    )
    p.add_argument(
        "--job-seconds",
        type=float,
        default=0.0,
        help="simulated measurement time between lease and result (default 0: the worst case, "
        "every agent back for the next job at once)",
    )
    p.add_argument("--lease-seconds", type=float, default=300.0)
    p.add_argument(
        "--stall-seconds",
        type=float,
        default=None,
        help="stop when nothing is leased or accepted this long (default: wait + 60)",
    )
    p.add_argument("--timeout", type=float, default=3600.0, help="bound of the whole run (s)")
    p.add_argument(
        "--log-level",
        default="warning",
        help="coordinator log level (info logs every request: costs CPU)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a coordinator setting (BNNBENCH_<KEY>), e.g. header_timeout_s=0; repeatable",
    )
    p.add_argument("--json", type=Path, default=None, metavar="OUT", help="write the report")
    p.add_argument("--keep", action="store_true", help="keep the data dir (logs, database)")
    args = p.parse_args(argv)
    if args.agents < 1 or args.jobs < 1:
        p.error("--agents and --jobs must be at least 1")
    if args.stall_seconds is None:
        args.stall_seconds = args.wait + 60.0
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = run(args)
    print_table(out)
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=2, default=str) + "\n")
    ok = out["p99_within_agent_timeouts"] and not out["errors"]
    if not args.idle:
        ok = ok and out["exactly_once"]["ok"]
    return 0 if ok else 1


if __name__ == "__main__":
    with contextlib.suppress(ImportError):  # a cheaper event loop: less load generator CPU
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    sys.exit(main())

"""Leases at scale (issue 14): an agent is handed a job it can run however many jobs for other
devices or runtimes are queued before it, and many agents leasing at once from a real
coordinator on PostgreSQL (``-m postgres``; skipped without its binaries or psycopg) never
share a job nor hear 204 while a job they can run is queued."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import CoordinatorProcess
from helpers.postgres import PostgresServer
from helpers.rows import add_device
from sqlalchemy import event, select

from bnnbench.schemas import JobCreate
from bnnbench.settings import CoordinatorSettings
from coordinator import queue
from coordinator.auth import hash_token
from coordinator.db import Database
from coordinator.models import Agent, Artifact, Device, Job, Model

SETTINGS = CoordinatorSettings(lease_seconds=60, max_attempts=3)


def _model(s: Any, libraries: tuple[str, ...] = ("native", "lce")) -> int:
    """A model with a ready artifact per library; its id."""
    m = Model(name="m", sha256="a" * 64, size=1, analysis_status="done")
    s.add(m)
    s.flush()
    for lib in libraries:
        s.add(Artifact(model_id=m.id, library=lib, status="ready", sha256="b" * 64, size=1))
    s.flush()
    return m.id


def _board(s: Any, name: str) -> Device:
    return add_device(s, name, hostname=f"board-{name}", arch="aarch64", cores=4, transport="ssh")


def test_a_runnable_job_behind_many_others_is_leased(tmp_path: Path) -> None:
    """30 older jobs: 3 of another device, 3 of a runtime this agent lacks, and 24 any agent
    may run that rivals (on other devices) take while this agent's lease is under way; then
    one job of this agent's device. Its lease gets that job (a fixed window of the 20 oldest
    candidates, all taken under it, answered nothing)."""
    db = Database(CoordinatorSettings(data_dir=tmp_path))
    try:
        with db.session() as s:
            model_id = _model(s)
            mine, other = _board(s, "mine"), _board(s, "other")
            a = Agent(
                name="a", token_hash=hash_token("t"), device_id=mine.id, runtimes={"native": "1"}
            )
            rival = Agent(
                name="r", token_hash=hash_token("r"), device_id=other.id, runtimes={"native": "1"}
            )
            s.add_all([a, rival])
            s.flush()
            agent_id, rival_id, mine_id, other_id = a.id, rival.id, mine.id, other.id
            for i in range(30):
                req = JobCreate(model_id=model_id, threads=[1 + i % 4])  # anyone's
                if i % 10 == 3:
                    req = JobCreate(model_id=model_id, threads=[1], device_id=other_id)
                elif i % 10 == 7:
                    req = JobCreate(model_id=model_id, library="lce", threads=[1])
                queue.create_jobs(s, req)
            jobs, _ = queue.create_jobs(
                s, JobCreate(model_id=model_id, threads=[2], device_id=mine_id)
            )
            target = jobs[0].id
            s.commit()
            assert s.scalar(select(Job.id).order_by(Job.id.desc()).limit(1)) == target == 31

        db_path = db.engine.url.database
        assert db_path is not None
        taken: list[int] = []

        def rivals_take_the_shared_jobs(_conn: Any, _cur: Any, statement: str, *_: Any) -> None:
            # the first time this agent's lease writes to jobs, rivals have just leased
            # every job any agent may run (committed on another connection)
            if taken or not statement.lstrip().upper().startswith("UPDATE JOBS"):
                return
            with contextlib.closing(sqlite3.connect(db_path, timeout=30)) as con, con:
                rows = con.execute(
                    "UPDATE jobs SET status = 'leased', leased_by = ?, "
                    "lease_id = hex(randomblob(16)) "
                    "WHERE status = 'queued' AND device_id IS NULL AND library = 'native' "
                    "RETURNING id",
                    (rival_id,),
                ).fetchall()
                taken.extend(r[0] for r in rows)

        event.listen(db.engine, "before_cursor_execute", rivals_take_the_shared_jobs)
        with db.session() as s:
            a = s.get(Agent, agent_id)
            assert a is not None
            job = queue.lease(s, a, SETTINGS)
            assert len(taken) == 24
            assert job is not None and job.id == target and job.leased_by == agent_id
            assert job.status == "leased" and job.history[-1]["event"] == "leased"
        event.remove(db.engine, "before_cursor_execute", rivals_take_the_shared_jobs)

        with db.session() as s:
            # a second agent of that device: busy with the first's job, so nothing for it
            b = Agent(name="b", token_hash=hash_token("u"), device_id=mine_id, runtimes={})
            s.add(b)
            s.flush()
            queue.create_jobs(s, JobCreate(model_id=model_id, threads=[1], device_id=mine_id))
            s.commit()
            assert queue.lease(s, b, SETTINGS) is None
    finally:
        db.dispose()


# ---------------------------------------------------------------- PostgreSQL


N_AGENTS, N_JOBS = 20, 100


@pytest.mark.postgres
def test_postgres_concurrent_agents_lease_each_job_once(
    pg: PostgresServer, coordinator_factory: Callable[..., CoordinatorProcess]
) -> None:
    url = pg.create_database()
    c = coordinator_factory(database_url=url, lease_seconds=60, conversion_workers=0)
    agents: list[httpx.Client] = []
    for i in range(N_AGENTS):
        reg, _ = c.register_agent(f"a{i}")
        agents.append(
            httpx.Client(
                base_url=f"{c.url}/api/v1",
                headers={"Authorization": f"Bearer {reg.token}"},
                timeout=60,
            )
        )
    db = Database(CoordinatorSettings(data_dir=c.data_dir, database_url=url))
    try:
        with db.session() as s:
            model_id = _model(s, ("native",))
            for _ in range(N_JOBS // 4):
                queue.create_jobs(s, JobCreate(model_id=model_id, threads=[1, 2, 3, 4]))
            s.commit()
        leased: list[int] = []
        empty_at: list[datetime] = []  # when each agent's 204 came back
        errors: list[str] = []
        barrier = threading.Barrier(N_AGENTS)

        def work(http: httpx.Client) -> None:
            barrier.wait()
            while True:
                r = http.post("/agents/lease", params={"wait": 0})
                if r.status_code == 204:
                    empty_at.append(datetime.now(UTC))
                    return
                if r.status_code != 200:
                    errors.append(f"{r.status_code} {r.text}")
                    return
                leased.append(r.json()["job_id"])

        threads = [threading.Thread(target=work, args=(h,)) for h in agents]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        assert sorted(leased) == list(range(1, N_JOBS + 1))  # each job once, none left
        assert len(empty_at) == N_AGENTS
        with db.session() as s:
            jobs = s.scalars(select(Job)).all()
        assert {j.status for j in jobs} == {"leased"}
        for j in jobs:
            events = [e for e in j.history if e["event"] == "leased"]
            assert len(events) == 1, (j.id, j.history)
            # a job leased after an agent heard 204 was queued, unclaimed, while it asked
            # (when its lease call began: before the claim, unlike the event's time)
            assert j.lease_expires_at is not None
            began = j.lease_expires_at - timedelta(seconds=60)
            began = began if began.tzinfo else began.replace(tzinfo=UTC)
            assert began < min(empty_at), f"job {j.id} leased after a 204"
    finally:
        db.dispose()
        for h in agents:
            h.close()

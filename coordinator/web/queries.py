"""What each dashboard page shows, read from the database as plain rows (the routers in
``pages`` only pick a template). ORM rows are returned inside the caller's session: pages
render before the session closes."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from bnnbench.schemas import DeviceOut, JobStatus
from coordinator import devices, results
from coordinator.models import Agent, Artifact, Device, Job, Model, Result
from coordinator.rows import get_row

PAGE = 200  # rows per listing; older ones through the API


@dataclass(frozen=True)
class JobRow:
    job: Job
    model: Model
    device: Device | None  # None: any device may take it
    agent: Agent | None  # the agent holding its lease


@dataclass(frozen=True)
class ResultRow:
    result: Result
    job: Job
    model: Model
    device: Device


def job_counts(s: Session) -> Counter[str]:
    rows = s.execute(select(Job.status, func.count()).group_by(Job.status)).all()
    return Counter({str(status): int(n) for status, n in rows})


def job_rows(s: Session, *where: ColumnElement[bool], limit: int = PAGE) -> list[JobRow]:
    q = (
        select(Job, Model, Device, Agent)
        .join(Model, Job.model_id == Model.id)
        .outerjoin(Device, Job.device_id == Device.id)
        .outerjoin(Agent, Job.leased_by == Agent.id)
        .where(*where)
        .order_by(Job.id.desc())
        .limit(limit)
    )
    return [JobRow(j, m, d, a) for j, m, d, a in s.execute(q).all()]


def result_rows(s: Session, *where: ColumnElement[bool], limit: int = PAGE) -> list[ResultRow]:
    q = results.joined_results().where(*where).order_by(Result.id.desc()).limit(limit)
    return [ResultRow(r, j, m, d) for r, j, m, d in s.execute(q).all()]


def overview(s: Session) -> dict[str, Any]:
    fleet = devices.list_devices(s)
    table = results.table(s)
    return {
        "job_counts": job_counts(s),
        "device_rows": fleet,
        "online": sum(1 for d in fleet if d.online),
        "busy": sum(1 for d in fleet if d.busy),
        "n_models": s.scalar(select(func.count()).select_from(Model)) or 0,
        "artifact_counts": Counter(
            {
                str(st): int(n)
                for st, n in s.execute(
                    select(Artifact.status, func.count()).group_by(Artifact.status)
                ).all()
            }
        ),
        "n_results": s.scalar(select(func.count()).select_from(Result)) or 0,
        "recent_results": result_rows(s, limit=20),
        "failed_jobs": job_rows(s, Job.status == JobStatus.failed, limit=10),
        "om": table["om"],
    }


def device_page(s: Session, device_id: int) -> dict[str, Any]:
    d = get_row(s, Device, device_id)
    agents = list(s.scalars(select(Agent).where(Agent.device_id == d.id).order_by(Agent.id)))
    busy = any(
        j.status == JobStatus.leased
        for j in s.scalars(select(Job).where(Job.leased_by.in_([a.id for a in agents])))
    )
    out: DeviceOut = devices.device_out(d, agents, busy)
    return {
        "d": out,
        "agents": agents,
        "jobs": job_rows(s, Job.device_id == d.id, limit=50),
        "results": result_rows(s, Result.device_id == d.id, limit=50),
    }


def jobs_page(s: Session, status: JobStatus | None) -> dict[str, Any]:
    where = [Job.status == status] if status is not None else []
    return {"jobs": job_rows(s, *where), "job_counts": job_counts(s), "status": status}


def job_page(s: Session, job_id: int) -> dict[str, Any]:
    rows = job_rows(s, Job.id == job_id, limit=1)
    if not rows:
        get_row(s, Job, job_id)  # 404 with the usual message
    (row,) = rows
    return {
        "row": row,
        "artifact": row.job.artifact,
        "results": result_rows(s, Result.job_id == job_id),
        "agents": {a.id: a for a in s.scalars(select(Agent))},
    }


def models_page(s: Session) -> dict[str, Any]:
    models = list(s.scalars(select(Model).order_by(Model.id.desc()).limit(PAGE)))
    arts: dict[int, list[Artifact]] = {}
    for a in s.scalars(select(Artifact).where(Artifact.model_id.in_([m.id for m in models]))):
        arts.setdefault(a.model_id, []).append(a)
    return {"models": models, "artifacts": arts}


def model_page(s: Session, model_id: int) -> dict[str, Any]:
    m = get_row(s, Model, model_id)
    return {
        "m": m,
        "artifacts": list(
            s.scalars(select(Artifact).where(Artifact.model_id == m.id).order_by(Artifact.id))
        ),
        "jobs": job_rows(s, Job.model_id == m.id, limit=50),
        "results": result_rows(s, Job.model_id == m.id, limit=50),
    }


def results_page(s: Session, valid: bool | None) -> dict[str, Any]:
    where = [Result.valid.is_(valid)] if valid is not None else []
    return {"results": result_rows(s, *where), "valid": valid}


def result_page(s: Session, result_id: int) -> dict[str, Any]:
    rows = result_rows(s, Result.id == result_id, limit=1)
    if not rows:
        get_row(s, Result, result_id)
    (row,) = rows
    return {"row": row, "agent": s.get(Agent, row.result.agent_id), "artifact": row.job.artifact}


def tables_page(s: Session) -> dict[str, Any]:
    return {"table": results.table(s)}

"""Jobs: creation and status (admin), results and failure reports (the leasing agent)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy import select

from bnnbench.schemas import JobCreate, JobFailure, JobOut, JobStatus, ResultIn, ResultOut
from coordinator import queue
from coordinator.api.deps import admin, agent, get_ctx
from coordinator.auth import Principal
from coordinator.errors import NotFound
from coordinator.models import Agent, Job
from coordinator.views import job_out, result_out

router = APIRouter(tags=["jobs"])


@router.post("/jobs", response_model=list[JobOut], status_code=201,
             dependencies=[Depends(admin)])
def create_jobs(body: JobCreate, request: Request) -> list[JobOut]:
    """One job per thread count. Jobs wait for the model's artifact for the library (created
    and converted in the background if missing), then are queued for agents."""
    ctx = get_ctx(request)
    with ctx.db.session() as s:
        jobs, new_artifact = queue.create_jobs(s, body)
        out = [job_out(j) for j in jobs]
    if new_artifact:
        ctx.work_signal.notify()
    if any(j.status == JobStatus.queued for j in out):
        ctx.jobs_signal.notify()
    return out


@router.get("/jobs", response_model=list[JobOut], dependencies=[Depends(admin)])
def list_jobs(
    request: Request,
    status: JobStatus | None = None,
    model_id: int | None = None,
    id: list[int] | None = Query(None, description="only these job ids (repeatable)"),
    limit: int = Query(1000, ge=1, le=10000),
    offset: int = Query(0, ge=0),
) -> list[JobOut]:
    q = select(Job).order_by(Job.id)
    if status is not None:
        q = q.where(Job.status == status)
    if model_id is not None:
        q = q.where(Job.model_id == model_id)
    if id:
        q = q.where(Job.id.in_(id))
    with get_ctx(request).db.session() as s:
        return [job_out(j) for j in s.scalars(q.limit(limit).offset(offset))]


@router.get("/jobs/{job_id}", response_model=JobOut, dependencies=[Depends(admin)])
def get_job(job_id: int, request: Request) -> JobOut:
    with get_ctx(request).db.session() as s:
        j = s.get(Job, job_id)
        if j is None:
            raise NotFound(f"job {job_id} not found")
        return job_out(j)


def _agent(s, p: Principal) -> Agent:  # noqa: ANN001 - Session
    a = s.get(Agent, p.agent_id)
    assert a is not None  # authenticated a moment ago; agents are never deleted
    return a


@router.post("/jobs/{job_id}/result", response_model=ResultOut,
             responses={409: {"description": "stale lease: nothing recorded"}})
def post_result(
    job_id: int, body: ResultIn, request: Request, p: Principal = Depends(agent)
) -> ResultOut:
    """Accepted only with the job's current lease; the server computes the statistics and the
    validity verdict from the raw samples."""
    ctx = get_ctx(request)
    with ctx.db.session() as s:
        r = queue.submit_result(s, _agent(s, p), job_id, body, ctx.settings)
        out = result_out(r)
        requeued = r.job.status == JobStatus.queued  # invalid: sent back to re-measure
    if requeued:
        ctx.jobs_signal.notify()
    return out


@router.post("/jobs/{job_id}/fail", response_model=JobOut,
             responses={409: {"description": "stale lease: nothing recorded"}})
def post_failure(
    job_id: int, body: JobFailure, request: Request, p: Principal = Depends(agent)
) -> JobOut:
    """The job is requeued (attempts + 1) or, after max_attempts or when not retryable,
    failed with the agent's error."""
    ctx = get_ctx(request)
    with ctx.db.session() as s:
        job = queue.report_failure(s, _agent(s, p), job_id, body, ctx.settings)
        out = job_out(job)
    if out.status == JobStatus.queued:
        ctx.jobs_signal.notify()
    return out

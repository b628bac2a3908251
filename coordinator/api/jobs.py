"""Jobs: creation and status (admin), results and failure reports (the leasing agent)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy.orm import Session

from bnnbench.schemas import (
    INT64_MAX,
    MAX_LIST_LIMIT,
    MAX_SAMPLE_MS,
    MIN_SAMPLE_MS,
    Endpoint,
    JobCreate,
    JobFailure,
    JobOut,
    JobStatus,
    ResultIn,
    ResultOut,
    RowId,
)
from bnnbench.settings import CoordinatorSettings
from coordinator import job_actions, queue
from coordinator.api.deps import admin, agent, get_ctx
from coordinator.auth import Principal
from coordinator.errors import Unprocessable
from coordinator.models import Agent, Job
from coordinator.rows import get_row, listing
from coordinator.views import job_out, result_out

router = APIRouter(tags=["jobs"])

Out = TypeVar("Out", JobOut, ResultOut)


def _conflict(why: str) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` of a route that answers 409 ``why``."""
    return {409: {"description": why}}


_STALE_LEASE = _conflict("stale lease: nothing recorded")  # an agent's report
_CONFLICT = _conflict("the job's status does not allow it")  # an operator's action


@router.post(
    Endpoint.JOBS, response_model=list[JobOut], status_code=201, dependencies=[Depends(admin)]
)
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


@router.get(Endpoint.JOBS, response_model=list[JobOut], dependencies=[Depends(admin)])
def list_jobs(
    request: Request,
    status: JobStatus | None = None,
    model_id: RowId | None = None,
    id: list[RowId] | None = Query(
        None, max_length=MAX_LIST_LIMIT, description="only these job ids (repeatable)"
    ),
    limit: int = Query(1000, ge=1, le=MAX_LIST_LIMIT),
    offset: int = Query(0, ge=0, le=INT64_MAX),
) -> list[JobOut]:
    q = listing(Job, status=status, model_id=model_id)
    if id:
        q = q.where(Job.id.in_(id))
    with get_ctx(request).db.session() as s:
        return [job_out(j) for j in s.scalars(q.limit(limit).offset(offset))]


@router.get(Endpoint.JOB, response_model=JobOut, dependencies=[Depends(admin)])
def get_job(job_id: RowId, request: Request) -> JobOut:
    with get_ctx(request).db.session() as s:
        return job_out(get_row(s, Job, job_id))


def _agent_report(
    request: Request,
    p: Principal,
    record: Callable[[Session, Agent, CoordinatorSettings], tuple[Out, str]],
) -> Out:
    """Record the leasing agent's report (``record`` answers what to send back and the job's
    new status); a job it sent back to the queue wakes the waiting agents."""
    ctx = get_ctx(request)
    with ctx.db.session() as s:
        a = s.get(Agent, p.agent_id)
        assert a is not None  # authenticated a moment ago; agents are never deleted
        out, status = record(s, a, ctx.settings)
    if status == JobStatus.queued:
        ctx.jobs_signal.notify()
    return out


def _check_samples(samples: Sequence[float]) -> None:
    """422 for a sample that is no latency: not finite, or outside [MIN_SAMPLE_MS,
    MAX_SAMPLE_MS] (schemas.py says why). Checked here, not in ResultIn: the agent builds
    ResultIn from what its runner measured and must still be able to send it."""
    for i, x in enumerate(samples):
        if not (math.isfinite(x) and MIN_SAMPLE_MS <= x <= MAX_SAMPLE_MS):
            raise Unprocessable(
                f"samples_ms[{i}] is {x!r}: a latency must be a finite number of milliseconds "
                f"from {MIN_SAMPLE_MS:g} to {MAX_SAMPLE_MS:g}"
            )


@router.post(Endpoint.JOB_RESULT, response_model=ResultOut, responses=_STALE_LEASE)
def post_result(
    job_id: RowId, body: ResultIn, request: Request, p: Principal = Depends(agent)
) -> ResultOut:
    """Accepted only with the job's current lease; the server computes the statistics and the
    validity verdict from the raw samples (an invalid result sends the job back to the queue
    to be measured again)."""

    _check_samples(body.samples_ms)

    def record(s: Session, a: Agent, cfg: CoordinatorSettings) -> tuple[ResultOut, str]:
        r = queue.submit_result(s, a, job_id, body, cfg)
        return result_out(r), r.job.status

    return _agent_report(request, p, record)


@router.post(Endpoint.JOB_FAILURE, response_model=JobOut, responses=_STALE_LEASE)
def post_failure(
    job_id: RowId, body: JobFailure, request: Request, p: Principal = Depends(agent)
) -> JobOut:
    """The job is requeued (attempts + 1) or, after max_attempts or when not retryable,
    failed with the agent's error."""

    def record(s: Session, a: Agent, cfg: CoordinatorSettings) -> tuple[JobOut, str]:
        job = queue.report_failure(s, a, job_id, body, cfg)
        return job_out(job), job.status

    return _agent_report(request, p, record)


# ------------------------------------------------------------------ operator actions


def _job_action(request: Request, action: Callable[[Session, int], Job], job_id: int) -> JobOut:
    ctx = get_ctx(request)
    with ctx.db.session() as s:
        out = job_out(action(s, job_id))
    if out.status == JobStatus.queued:
        ctx.jobs_signal.notify()
    return out


@router.post(
    Endpoint.JOB_CANCEL, response_model=JobOut, dependencies=[Depends(admin)], responses=_CONFLICT
)
def cancel_job(job_id: RowId, request: Request) -> JobOut:
    """A waiting, queued or leased job becomes cancelled: never leased again; the agent running
    it gets 409 on its next heartbeat or result, and nothing it sends is recorded."""
    return _job_action(request, job_actions.cancel, job_id)


@router.post(
    Endpoint.JOB_RETRY, response_model=JobOut, dependencies=[Depends(admin)], responses=_CONFLICT
)
def retry_job(job_id: RowId, request: Request) -> JobOut:
    """A failed or cancelled job is queued again (waiting while its artifact converts) with its
    attempts reset."""
    return _job_action(request, job_actions.retry, job_id)


@router.post(
    Endpoint.JOB_RERUN,
    response_model=JobOut,
    status_code=201,
    dependencies=[Depends(admin)],
    responses=_CONFLICT,
)
def rerun_job(job_id: RowId, request: Request) -> JobOut:
    """A new job with the job's model, artifact, device, threads, runs and protocol."""
    return _job_action(request, job_actions.rerun, job_id)

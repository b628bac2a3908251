"""An operator's actions on a job: cancel, retry, re-run (REST and dashboard alike).

- **cancel**: a waiting, queued or leased job becomes ``cancelled``. Leasing only takes queued
  jobs, so it is never handed out again; an agent still running it is answered 409 ("job N
  was cancelled") on its next heartbeat and on its result, and nothing it sends is recorded.
- **retry**: a failed or cancelled job goes back to the queue (to ``waiting`` while its
  artifact converts) with its failed attempts and re-measures reset.
- **rerun**: a new job with the same model, artifact, device, threads, runs and protocol (the
  settings as they stand: a re-measured job's doubled runs and pause included); the old job
  and its results stay as they are.

Each state change is a compare-and-set on the status read, as in ``coordinator.queue``: an
agent's lease or result racing with the operator's click makes one of them a clear 409.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from bnnbench.schemas import ArtifactStatus, JobStatus
from coordinator.errors import Conflict
from coordinator.models import Job, utcnow
from coordinator.rows import changed, get_row

CANCELLABLE = (JobStatus.waiting, JobStatus.queued, JobStatus.leased)
RETRYABLE = (JobStatus.failed, JobStatus.cancelled)
# what a re-run takes over from the old job as it stands (and a copy of its protocol)
RERUN_COPIES = ("model_id", "library", "artifact_id", "threads", "device_id", "warmup", "runs")


def _event(job: Job, event: str, **kw: Any) -> None:
    # JSON columns are not mutation-tracked: assign a new list
    job.history = [*(job.history or []), {"at": utcnow().isoformat(), "event": event, **kw}]


def _cas(s: Session, job: Job, **values: Any) -> None:
    """Apply ``values`` if the job is still in the status (and lease) we read."""
    seen_status, seen_lease = job.status, job.lease_id
    count = changed(
        s,
        update(Job)
        .where(
            Job.id == job.id,
            Job.status == seen_status,
            Job.lease_id.is_not_distinct_from(seen_lease),
        )
        .values(**values, updated_at=utcnow())
        .execution_options(synchronize_session=False),
    )
    if count != 1:
        raise Conflict(
            f"job {job.id} changed while the request arrived (it was {seen_status}); try again"
        )
    s.refresh(job)


def _status_after_artifact(job: Job) -> JobStatus:
    art = job.artifact
    if art.status == ArtifactStatus.failed:
        raise Conflict(
            f"job {job.id}: its artifact {art.id} ({art.library}) failed to convert: "
            f"{art.error}; retry the artifact first (POST /api/v1/artifacts/{art.id}/retry)"
        )
    return JobStatus.queued if art.status == ArtifactStatus.ready else JobStatus.waiting


def cancel(s: Session, job_id: int) -> Job:
    job = get_row(s, Job, job_id)
    if job.status not in CANCELLABLE:
        raise Conflict(
            f"job {job_id} is {job.status}: only waiting, queued or leased jobs can be cancelled"
        )
    was, agent = job.status, job.leased_by
    _cas(
        s,
        job,
        status=JobStatus.cancelled,
        error="cancelled by the operator",
        lease_id=None,
        lease_expires_at=None,
        leased_by=None,
    )
    _event(job, "cancelled", was=was, **({"agent": agent} if agent is not None else {}))
    s.flush()
    return job


def retry(s: Session, job_id: int) -> Job:
    job = get_row(s, Job, job_id)
    if job.status not in RETRYABLE:
        raise Conflict(
            f"job {job_id} is {job.status}: only failed or cancelled jobs can be retried "
            "(re-run a done job instead)"
        )
    status = _status_after_artifact(job)
    was = job.status
    _cas(s, job, status=status, error=None, attempts=0, remeasures=0)
    _event(job, "retried", was=was)
    s.flush()
    return job


def rerun(s: Session, job_id: int) -> Job:
    old = get_row(s, Job, job_id)
    new = Job(
        **{name: getattr(old, name) for name in RERUN_COPIES},
        protocol=dict(old.protocol) if old.protocol else None,
        status=_status_after_artifact(old),
        attempts=0,
        remeasures=0,
        history=[{"at": utcnow().isoformat(), "event": "re-run", "of": old.id}],
    )
    s.add(new)
    s.flush()
    return new

"""The job queue: creation, leases, heartbeats, expiry, results and failure reports.

Every state change of a leased job is a compare-and-set ``UPDATE … WHERE id=? AND status=? AND
lease_id=?`` whose rowcount is checked, so two agents can never hold the same job and a stale
lease can never overwrite anything, on SQLite (writes serialised) as on PostgreSQL (the
``WHERE`` is re-evaluated after a row lock wait).

``attempts`` counts failed attempts: expired leases and reported failures. When it reaches
``max_attempts`` the job fails with the last cause.
"""

from __future__ import annotations

import json
import math
import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import CursorResult, Update, bindparam, or_, select, update
from sqlalchemy.orm import Session, aliased, joinedload
from sqlalchemy.orm.attributes import set_committed_value

from bnnbench.schemas import (
    MAX_SAMPLES,
    MAX_THREADS,
    ArtifactStatus,
    JobCreate,
    JobFailure,
    JobStatus,
    ResultIn,
)
from bnnbench.settings import CoordinatorSettings
from bnnbench.stats import CI_CONFIDENCE, rel_ci_halfwidth, summarize
from coordinator import colocation
from coordinator.errors import Conflict, Unprocessable
from coordinator.models import Agent, Artifact, Device, Job, Model, Result, utcnow
from coordinator.rows import changed, get_row


def _event(job: Job, event: str, **kw: Any) -> None:
    # JSON columns are not mutation-tracked: assign a new list
    job_history = list(job.history or [])
    job_history.append({"at": utcnow().isoformat(), "event": event, **kw})
    job.history = job_history


# ------------------------------------------------------------------ creation


def get_or_create_artifact(s: Session, model: Model, library: str) -> tuple[Artifact, bool]:
    art = s.scalar(
        select(Artifact).where(Artifact.model_id == model.id, Artifact.library == library)
    )
    if art is not None:
        return art, False
    art = Artifact(model_id=model.id, library=library, status=ArtifactStatus.pending)
    s.add(art)
    s.flush()
    return art, True


def create_jobs(s: Session, req: JobCreate) -> tuple[list[Job], bool]:
    """One job per distinct thread count and target device (``device_id``, the devices the
    ``devices`` selectors match, or any device). Thread counts are checked against each
    target's cores. Returns the jobs and whether a new artifact (a conversion) was created."""
    from coordinator.devices import select_devices

    model = get_row(s, Model, req.model_id)
    targets: list[Device | None] = [None]
    if req.device_id is not None:
        targets = [get_row(s, Device, req.device_id)]
    if req.devices:
        targets = [*(t for t in targets if t is not None), *select_devices(s, req.devices)]
    threads: list[int] = []
    for t in req.threads:
        if not 1 <= t <= MAX_THREADS:
            raise Unprocessable(f"threads must be between 1 and {MAX_THREADS}, got {t}")
        if t not in threads:
            threads.append(t)
    for dev in targets:
        if dev is not None and max(threads) > dev.cores:
            raise Unprocessable(
                f"threads {max(threads)} > the {dev.cores} cores of device {dev.id} "
                f"({dev.label()}); ask for at most {dev.cores}"
            )
    if req.library == "dabnn" and threads != [1]:
        raise Unprocessable("daBNN is single-threaded: threads must be [1]")
    art, created = get_or_create_artifact(s, model, str(req.library))
    protocol = req.protocol.model_dump(exclude_defaults=True) or None
    jobs = []
    for dev in dict.fromkeys(targets):  # a device selected twice gets one set of jobs
        for t in threads:
            job = Job(
                model_id=model.id,
                library=str(req.library),
                artifact_id=art.id,
                threads=t,
                device_id=dev.id if dev is not None else None,
                warmup=req.warmup,
                runs=req.runs,
                protocol=protocol,
                attempts=0,
                remeasures=0,
                history=[],
            )
            if art.status == ArtifactStatus.ready:
                job.status = JobStatus.queued
            elif art.status == ArtifactStatus.failed:
                job.status = JobStatus.failed
                job.error = f"artifact conversion failed: {art.error}"
            else:
                job.status = JobStatus.waiting
            s.add(job)
            jobs.append(job)
    s.flush()
    return jobs, created


def on_artifact_ready(s: Session, artifact_id: int) -> int:
    """Waiting jobs of the artifact become queued; returns how many."""
    return changed(
        s,
        update(Job)
        .where(Job.artifact_id == artifact_id, Job.status == JobStatus.waiting)
        .values(status=JobStatus.queued, updated_at=utcnow()),
    )


def on_artifact_failed(s: Session, artifact_id: int, error: str) -> int:
    """Jobs still waiting for the artifact fail with the conversion error."""
    return changed(
        s,
        update(Job)
        .where(Job.artifact_id == artifact_id, Job.status == JobStatus.waiting)
        .values(
            status=JobStatus.failed,
            error=f"artifact conversion failed: {error}",
            updated_at=utcnow(),
        ),
    )


# ------------------------------------------------------------------ leases

# how stale ``Agent.last_seen`` may get before a heartbeat or lease poll writes it again: not
# a write per call (1000 agents beating every 10 s were 100 writes a second), still well
# within devices.ONLINE_WITHIN (45 s: three missed beats of 10 s)
LAST_SEEN_RESOLUTION = timedelta(seconds=15)


def _clear_lease(job_values: dict[str, Any]) -> dict[str, Any]:
    return {**job_values, "lease_id": None, "lease_expires_at": None, "leased_by": None}


def _give_up_or_requeue(
    s: Session, job: Job, cause: str, max_attempts: int, *, retryable: bool = True
) -> bool:
    """CAS the leased ``job`` to queued or failed; returns False if the lease changed under us."""
    attempts = job.attempts + 1
    expired = sum(1 for e in (job.history or []) if e.get("event") == "lease expired")
    if cause == "lease expired":
        expired += 1
    if not retryable or attempts >= max_attempts:
        if expired == attempts:
            error = f"lease expired {attempts} times (max_attempts={max_attempts})"
        elif not retryable:
            error = cause
        else:
            error = f"failed {attempts} times (max_attempts={max_attempts}); last: {cause}"
        values = {"status": JobStatus.failed, "error": error}
    else:
        values = {"status": JobStatus.queued, "error": f"attempt {attempts} failed: {cause}"}
    count = changed(
        s,
        update(Job)
        .where(Job.id == job.id, Job.status == JobStatus.leased, Job.lease_id == job.lease_id)
        .values(**_clear_lease(values), attempts=attempts, updated_at=utcnow())
        .execution_options(synchronize_session=False),
    )
    if count != 1:
        return False
    s.refresh(job)
    _event(job, cause if cause == "lease expired" else "failure reported", detail=cause)
    return True


def requeue_expired(s: Session, max_attempts: int, now: datetime | None = None) -> int:
    """Requeue (or fail, after max_attempts) every leased job whose lease has expired.
    Returns the number of jobs changed."""
    now = now or utcnow()
    # ids first: this runs before every lease, and almost always finds nothing
    ids = s.scalars(
        select(Job.id).where(Job.status == JobStatus.leased, Job.lease_expires_at < now)
    ).all()
    if not ids:
        return 0
    expired = s.scalars(select(Job).where(Job.id.in_(ids)).order_by(Job.id)).all()
    n = 0
    for job in expired:
        if _give_up_or_requeue(s, job, "lease expired", max_attempts):
            n += 1
    return n


@lru_cache(maxsize=8)
def _claim(postgres: bool, by_library: bool) -> Update:
    """The lease's one ``UPDATE``, built once per (dialect, library filter) with bound
    parameters: building the aliased subqueries took most of a lease's CPU (profiled with
    tools/loadtest.py), and SQLAlchemy caches the compiled SQL of an equal statement anyway.
    Parameters: ``agent``, ``device``, ``libraries`` (when ``by_library``), ``new_lease``,
    ``expires``, ``now``."""
    # one benchmark per device at a time, even when two agents serve it (a Pi's own agent
    # and a host agent reaching it over ssh): timings of a shared board would be worthless
    held, holder = aliased(Job), aliased(Agent)
    busy = (
        select(held.id)
        .join(holder, held.leased_by == holder.id)
        .where(
            held.status == JobStatus.leased,
            holder.device_id == bindparam("device"),
            holder.id != bindparam("agent"),
        )
        .exists()
    )
    cand = aliased(Job)
    q = select(cand.id).where(
        cand.status == JobStatus.queued,
        or_(cand.device_id.is_(None), cand.device_id == bindparam("device")),
        ~busy,
    )
    if by_library:  # an agent that names its runtimes only gets jobs it can run
        q = q.where(cand.library.in_(bindparam("libraries", expanding=True)))
    q = q.order_by(cand.id).limit(1)
    if postgres:
        q = q.with_for_update(of=cand, skip_locked=True)
    return (
        update(Job)
        .where(Job.id == q.scalar_subquery(), Job.status == JobStatus.queued)
        .values(
            status=JobStatus.leased,
            lease_id=bindparam("new_lease"),
            lease_expires_at=bindparam("expires"),
            leased_by=bindparam("agent"),
            updated_at=bindparam("now"),
        )
        .execution_options(synchronize_session=False)
    )


def lease(
    s: Session, agent: Agent, settings: CoordinatorSettings, now: datetime | None = None
) -> Job | None:
    """Hand the oldest queued job this agent can run to it, or None.

    One ``UPDATE jobs … WHERE id = (SELECT the oldest runnable job)``: the candidate is chosen
    in SQL for this agent (its device or none, its runtimes, its device not busy), so no job it
    could run is ever missed behind others' jobs. SQLite runs the statement under its write
    lock (atomic); on PostgreSQL the candidate is claimed ``FOR UPDATE SKIP LOCKED`` (agents
    never take the same job nor wait on each other's) after a lock on the agent's device row,
    which serialises the leases of one device only (its one-lease-at-a-time rule)."""
    now = now or utcnow()
    requeue_expired(s, settings.max_attempts, now)
    s.commit()
    # a device on the coordinator's machine waits while conversions run (coordinator.colocation);
    # the device row is only loaded when conversions are isolated at all
    if colocation.isolating(settings) and colocation.hold_lease(s, agent.device, settings):
        return None
    postgres = s.get_bind().dialect.name == "postgresql"
    if postgres:
        s.execute(select(Device.id).where(Device.id == agent.device_id).with_for_update())
    libraries = sorted((agent.runtimes or {}).keys())
    lease_id = secrets.token_hex(16)
    params: dict[str, Any] = {
        "agent": agent.id,
        "device": agent.device_id,
        "new_lease": lease_id,
        "expires": now + timedelta(seconds=settings.lease_seconds),
        "now": now,
    }
    if libraries:
        params["libraries"] = libraries
    result = s.execute(_claim(postgres, bool(libraries)), params)
    assert isinstance(result, CursorResult)
    if result.rowcount != 1:
        s.rollback()  # nothing this agent can run (or its device is busy): release the lock
        return None
    # populate_existing: a Job of this session (requeue_expired's) may hold older values;
    # the artifact comes in the same query (the lease answer names it)
    job = s.scalar(
        select(Job)
        .where(Job.lease_id == lease_id)
        .options(joinedload(Job.artifact))
        .execution_options(populate_existing=True)
    )
    assert job is not None
    _event(job, "leased", agent=agent.id, lease_id=lease_id)
    s.commit()
    return job


def any_queued(s: Session) -> bool:
    """Whether any job is queued at all (for any agent): one index lookup."""
    return s.scalar(select(Job.id).where(Job.status == JobStatus.queued).limit(1)) is not None


def _cancelled(job: Job) -> None:
    # an operator cancelled the job under the agent: say so, not "stale lease"
    if job.status == JobStatus.cancelled:
        raise Conflict(f"job {job.id} was cancelled: nothing was recorded; stop working on it")


def _held_job(s: Session, agent: Agent, job_id: int) -> Job:
    job = get_row(s, Job, job_id)
    _cancelled(job)
    if job.status != JobStatus.leased or job.leased_by != agent.id:
        raise Conflict(
            f"job {job_id} is not leased by this agent (status {job.status}); "
            "the lease expired or was reassigned: stop working on it"
        )
    return job


def heartbeat(
    s: Session,
    agent: Agent,
    job_id: int | None,
    settings: CoordinatorSettings,
    now: datetime | None = None,
) -> datetime | None:
    now = now or utcnow()
    if now - agent.last_seen > LAST_SEEN_RESOLUTION:
        s.execute(update(Agent).where(Agent.id == agent.id).values(last_seen=now))
        s.commit()  # the agent is alive even if the job part is refused below
    if job_id is None:
        return None
    job = _held_job(s, agent, job_id)
    until = now + timedelta(seconds=settings.lease_seconds)
    leased_at = _leased_at(job)
    if leased_at is not None:
        cap = lease_cap_seconds(job, settings)
        if leased_at.tzinfo is None and now.tzinfo is not None:
            leased_at = leased_at.replace(tzinfo=now.tzinfo)
        if now >= leased_at + timedelta(seconds=cap):
            seen = job.history or []
            if not any(
                e.get("event") == "lease cap reached" and e.get("lease_id") == job.lease_id
                for e in seen
            ):
                _event(job, "lease cap reached", lease_id=job.lease_id, cap_s=cap)
                s.commit()
            raise Conflict(
                f"job {job_id} has been leased for {(now - leased_at).total_seconds():.0f} s, "
                f"past its cap of {cap:g} s (max_lease_total_s plus the time its protocol "
                "asks for): the lease is no longer extended and expires; the job is requeued "
                "or failed like any expired lease"
            )
    count = changed(
        s,
        update(Job)
        .where(Job.id == job.id, Job.status == JobStatus.leased, Job.leased_by == agent.id)
        .values(lease_expires_at=until)
        .execution_options(synchronize_session=False),
    )
    if count != 1:
        raise Conflict(f"job {job_id} is no longer leased by this agent")
    return until


# slack over the time a job's protocol asks a run to spend (as the agent's run timeout)
PROTOCOL_TIME_FACTOR = 3.0


def lease_cap_seconds(job: Job, settings: CoordinatorSettings) -> float:
    """How long heartbeats may keep one lease of ``job`` alive: ``max_lease_total_s`` plus
    what its protocol implies (the cool-down, and 3x its warm-up and minimum timed time), so
    a job that asks for a long measurement is not cut short by a cap sized for the default."""
    p = job.protocol or {}
    asked_s = (float(p.get("warmup_ms") or 0) + float(p.get("min_time_ms") or 0)) / 1000
    return (
        settings.max_lease_total_s
        + float(p.get("cooldown_s") or 0)
        + PROTOCOL_TIME_FACTOR * max(asked_s, 0.0)
    )


def _check_lease(s: Session, agent: Agent, job_id: int, lease_id: str) -> Job:
    # the artifact in the same query: a result's verdict and row name it
    job = s.get(Job, job_id, options=[joinedload(Job.artifact)]) or get_row(s, Job, job_id)
    _cancelled(job)
    if job.status != JobStatus.leased or job.lease_id != lease_id or job.leased_by != agent.id:
        raise Conflict(
            f"stale lease for job {job_id}: the job is {job.status} and lease {lease_id!r} is "
            "not its current lease (expired and requeued?); nothing was recorded"
        )
    return job


def _lease_event(job: Job, lease_id: str) -> dict[str, Any] | None:
    for e in reversed(job.history or []):
        if e.get("event") == "leased" and e.get("lease_id") == lease_id:
            return e
    return None


def replayed_result(s: Session, agent: Agent, job_id: int, lease_id: str) -> Result | None:
    """The result this agent already delivered under ``lease_id`` (its answer was lost on the
    way back and the agent posts again): a retry with the same samples gets that result back,
    nothing new is recorded. None when the lease delivered nothing."""
    job = s.get(Job, job_id)
    if job is None or (job.status == JobStatus.leased and job.lease_id == lease_id):
        return None
    leased = _lease_event(job, lease_id)
    if leased is None or leased.get("agent") != agent.id:
        return None
    since = datetime.fromisoformat(leased["at"])
    return s.scalar(
        select(Result)
        .where(Result.job_id == job_id, Result.agent_id == agent.id, Result.created_at >= since)
        .order_by(Result.id)
        .limit(1)
    )


def note_late_result(s: Session, agent: Agent, job_id: int, body: ResultIn) -> None:
    """A result that came after its lease ended (expired and requeued, cancelled) is refused,
    but the job's history keeps a line of it: who measured what, under which lease. Once
    per lease, so an agent retrying it adds nothing."""
    job = s.get(Job, job_id)
    if job is None or job.status == JobStatus.cancelled:
        return  # a cancelled job records nothing more (coordinator/job_actions.py)
    leased = _lease_event(job, body.lease_id)
    if leased is None or leased.get("agent") != agent.id:
        return  # not a lease this agent held on this job: nothing to keep
    if any(
        e.get("event") == "late result refused" and e.get("lease_id") == body.lease_id
        for e in job.history or []
    ):
        return
    samples = sorted(float(x) for x in body.samples_ms)
    _event(
        job,
        "late result refused",
        agent=agent.id,
        lease_id=body.lease_id,
        samples=len(samples),
        median_ms=samples[len(samples) // 2] if samples else None,
    )
    s.commit()


# ------------------------------------------------------------------ results


def verdict(
    samples: Sequence[float],
    runs: int,
    settings: CoordinatorSettings,
    env: dict[str, Any] | None = None,
    *,
    emulated: bool = False,
    extra_problems: Sequence[str] = (),
) -> tuple[bool, str]:
    """Valid or not, and why: enough samples, a precise median (its confidence interval within
    ±``max_rel_ci``; settings.py says why that bar), optionally stdev/median within
    ``max_rel_stdev``, no throttling, and no ``extra_problems`` (e.g. a conversion overlapped)."""
    st = summarize(samples)
    problems = []
    if st.n < runs:
        problems.append(f"{st.n} of {runs} requested runs")
    if st.n < settings.min_valid_samples:
        problems.append(f"fewer than {settings.min_valid_samples} samples")
    rel_ci = rel_ci_halfwidth(st)
    level = st.ci_level or 0.0
    ci_text = f"median {level:.0%} CI ±{rel_ci:.1%}"
    # below 6 samples no order-statistic interval reaches 95 %: [min, max] is the widest
    small = f" ([min, max] of {st.n}; {CI_CONFIDENCE:.0%} needs 6 samples)"
    small = small if level < CI_CONFIDENCE else ""
    if rel_ci > settings.max_rel_ci:
        problems.append(f"too noisy: {ci_text} > ±{settings.max_rel_ci:.1%}{small}")
    rel_sd = st.stdev_ms / st.median_ms if st.median_ms > 0 else math.inf
    if settings.max_rel_stdev is not None and rel_sd > settings.max_rel_stdev:
        problems.append(f"too noisy: stdev/median {rel_sd:.2f} > {settings.max_rel_stdev}")
    problems += throttling(env or {}, settings)
    problems += extra_problems
    if problems:
        return False, "invalid: " + "; ".join(problems)
    text = f"ok: {st.n} samples, {ci_text}{small}, cv {st.cv or 0.0:.3f}"
    if emulated:
        text += " (emulated device: correctness only, never in tables or OM)"
    return True, text


def _leased_at(job: Job) -> datetime | None:
    """When the current lease began (its history event)."""
    for e in reversed(job.history or []):
        if e.get("event") == "leased" and e.get("lease_id") == job.lease_id:
            try:
                return datetime.fromisoformat(e["at"])
            except (KeyError, TypeError, ValueError):
                return None
    return None


def throttling(env: dict[str, Any], settings: CoordinatorSettings) -> list[str]:
    """Signs that the device slowed itself down while it measured, from the readings the
    agent took before and after the run: a frequency drop on the cores it ran on, a
    temperature rise or an absolute temperature past the limits, or the Pi firmware's
    throttled/capped bits."""
    before, after = env.get("readings_before") or {}, env.get("readings_after") or {}
    out = []
    cpus = {f"cpu{c}" for c in env.get("affinity_cpus") or []}
    f0, f1 = before.get("cur_freq_khz") or {}, after.get("cur_freq_khz") or {}
    drops = []
    for cpu in sorted(set(f0) & set(f1)):
        if cpus and cpu not in cpus:
            continue
        if f0[cpu] > 0 and f1[cpu] < f0[cpu] * (1 - settings.throttle_max_freq_drop):
            drops.append(f"{cpu} {f0[cpu] // 1000}->{f1[cpu] // 1000} MHz")
    if drops:
        out.append("frequency dropped: " + ", ".join(drops[:4]))
    t0, t1 = before.get("temperatures_c") or {}, after.get("temperatures_c") or {}
    if t1:
        hottest = max(t1, key=lambda k: t1[k])
        if t1[hottest] > settings.throttle_max_temp_c:
            out.append(f"too hot: {hottest} {t1[hottest]:.1f} °C > {settings.throttle_max_temp_c}")
        rises = {k: t1[k] - t0[k] for k in set(t0) & set(t1)}
        if rises:
            zone = max(rises, key=lambda k: rises[k])
            if rises[zone] > settings.throttle_max_temp_rise_c:
                out.append(
                    f"temperature rose {rises[zone]:.1f} °C ({zone}) > "
                    f"{settings.throttle_max_temp_rise_c}"
                )
    for label, reading in (("before", before), ("after", after)):
        bits = reading.get("throttled")
        if isinstance(bits, str) and bits.startswith("0x") and int(bits, 16) & 0x6:
            out.append(f"firmware reports throttling {label} the run ({bits})")
    return out


def submit_result(
    s: Session, agent: Agent, job_id: int, body: ResultIn, settings: CoordinatorSettings
) -> Result:
    samples = [float(x) for x in body.samples_ms]
    if len(samples) > MAX_SAMPLES:
        raise Unprocessable(f"too many samples: {len(samples)} > {MAX_SAMPLES}")
    bad = [x for x in samples if not math.isfinite(x) or x <= 0]
    if bad:
        raise Unprocessable(f"samples_ms must be finite positive milliseconds; got {bad[0]!r}")
    try:
        json.dumps(body.env, allow_nan=False)
    except ValueError:
        raise Unprocessable("env must be plain JSON (no NaN or Infinity values)") from None
    try:
        job = _check_lease(s, agent, job_id, body.lease_id)
    except Conflict:
        done = replayed_result(s, agent, job_id, body.lease_id)
        if done is not None and list(done.samples_ms) == samples:
            return done  # a retry of a result already accepted: the same answer again
        note_late_result(s, agent, job_id, body)
        raise
    leased_at = _leased_at(job)
    # everything the verdict needs is read and computed before the compare-and-set: on SQLite
    # the write lock is then held for three short statements, not for the reads and the maths
    stats = summarize(samples)
    device = s.get(Device, agent.device_id)
    assert device is not None
    extra = []
    if (why := colocation.overlap(s, device, settings, leased_at)) is not None:
        extra.append(f"shared cores: {why}")
    unfaithful = job.artifact.status == ArtifactStatus.failed
    if unfaithful:  # failed since the lease (e.g. an older version had let it through)
        extra.append(f"artifact {job.artifact_id} failed: {job.artifact.error}")
    valid, text = verdict(
        samples,
        job.runs,
        settings,
        body.env,
        emulated=bool(device.emulated),
        extra_problems=extra,
    )
    now = utcnow()
    values: dict[str, Any] = _clear_lease({"status": JobStatus.done, "error": None})
    events = [{"at": now.isoformat(), "event": "done", "agent": agent.id}]
    if (
        not valid
        and not device.emulated
        and not unfaithful
        and (job.remeasures or 0) < settings.max_remeasures
    ):
        again = _remeasure(job, text, settings)
        values.update(again)
        events.append({"at": now.isoformat(), "event": "re-measure", "runs": again["runs"]})
        events[-1]["detail"] = text
    # the history as it is when the lease is closed (RETURNING, under the row's write lock:
    # a heartbeat's event is not lost), then the events of this result appended to it
    closed = s.execute(
        update(Job)
        .where(Job.id == job.id, Job.status == JobStatus.leased, Job.lease_id == body.lease_id)
        .values(**values, updated_at=now)
        .returning(Job.history)
        .execution_options(synchronize_session=False)
    ).first()
    if closed is None:
        raise Conflict(f"stale lease for job {job_id}: it changed while the result arrived")
    history = [*(closed[0] or []), *events]
    s.execute(
        update(Job)
        .where(Job.id == job.id)
        .values(history=history)
        .execution_options(synchronize_session=False)
    )
    # the session's Job as stored, without a reload or a second flush of it
    for key, value in {**values, "updated_at": now, "history": history}.items():
        set_committed_value(job, key, value)
    result = Result(
        job_id=job.id,
        agent_id=agent.id,
        device_id=device.id,
        stats=stats.model_dump(),
        median_ms=stats.median_ms,
        samples_ms=samples,
        runtime_version=body.runtime_version,
        device_fingerprint=device.fingerprint,
        artifact_sha256=job.artifact.sha256 or "",
        threads=job.threads,
        env=body.env,
        valid=valid,
        verdict=text,
        created_at=now,
    )
    result.job = job
    s.add(result)
    s.flush()
    return result


def _remeasure(job: Job, why: str, settings: CoordinatorSettings) -> dict[str, Any]:
    """The new values of a job whose result came back invalid: back to the queue, with twice
    the runs and a pause before it; the invalid result stays as the attempt's record."""
    remeasures = (job.remeasures or 0) + 1
    protocol = dict(job.protocol or {})
    protocol["cooldown_s"] = max(protocol.get("cooldown_s", 0.0), settings.remeasure_pause_s)
    return {
        "remeasures": remeasures,
        "runs": min(job.runs * 2, 10_000),
        "protocol": protocol,
        "status": JobStatus.queued,
        "error": f"re-measuring ({remeasures}/{settings.max_remeasures}): {why}",
    }


def report_failure(
    s: Session, agent: Agent, job_id: int, body: JobFailure, settings: CoordinatorSettings
) -> Job:
    job = _check_lease(s, agent, job_id, body.lease_id)
    cause = f"agent {agent.name!r} reported: {body.error}"
    if not _give_up_or_requeue(s, job, cause, settings.max_attempts, retryable=body.retryable):
        raise Conflict(f"stale lease for job {job_id}: it changed while the report arrived")
    return job

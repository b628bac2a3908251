"""Background analysis and conversion: never inside a request.

The dispatcher (an asyncio task started in the app's lifespan) claims work from the database
(models with ``analysis_status='pending'``, artifacts with ``status='pending'``) with a
compare-and-set, and runs each item in a separate ``python -m coordinator.worker`` process with
a timeout. Because the queue *is* the database, work pending when the server stopped is picked
up after a restart.

Several coordinators may share one database (docs/scaling.md): a claim names the coordinator
(``claimed_by``: its instance id) and lasts ``conversion_claim_seconds`` (``claim_expires_at``),
renewed every third of that while the worker runs. Any coordinator takes over an item whose
claim expired (its coordinator died; its worker died with it), so an item is converted by one
coordinator at a time and retried when that one dies. A coordinator writes an outcome only
while it still holds the claim (compare-and-set), and stops its worker when a renewal finds
the claim taken. At startup only claims that expired or whose holder is gone (its owner lock
in the shared data_dir is free) are reset to ``pending`` (and, in a database an older version
left, items without a claim); at shutdown a coordinator releases its own.

A :class:`converters.errors.ConversionError` marks the artifact failed with its message and
fails the jobs waiting for it; the model and every other row and blob stay as they are. So does
a conversion whose fidelity check did not pass (:func:`fidelity_gate`): such an artifact is
never benchmarked, its report (``fidelity``, ``fidelity_gate``) stays on it for inspection.
While a device on this machine measures, no item starts (coordinator.colocation).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, Update, and_, or_, select, update
from sqlalchemy.orm import InstrumentedAttribute, Session

import coordinator
from bnnbench.schemas import ArtifactStatus, JobStatus
from bnnbench.settings import CoordinatorSettings
from coordinator import colocation, queue, telemetry, worker
from coordinator.db import Database
from coordinator.models import Artifact, Job, Model, utcnow
from coordinator.rows import changed
from coordinator.signals import Signal
from coordinator.store import BlobStore

log = logging.getLogger("bnnbench.coordinator.conversion")

_PROJECT_ROOT = str(Path(coordinator.__file__).resolve().parent.parent)


@dataclass
class WorkItem:
    kind: str  # "analyze" | "convert"
    id: int  # model id or artifact id
    model_path: Path
    library: str | None = None


@dataclass
class Outcome:
    ok: bool
    result: dict[str, Any]
    error: str = ""
    user_error: bool = False


def _unheld(expires: InstrumentedAttribute[datetime | None], now: datetime) -> ColumnElement[bool]:
    # no claim (an older version's row) or an expired one (its coordinator died)
    return or_(expires.is_(None), expires < now)


def recover_interrupted(
    db: Database, now: datetime | None = None, holder_alive: Callable[[str], bool] | None = None
) -> int:
    """At startup: work whose coordinator died (its claim expired, or it has no claim: a
    database an older version left) goes back to pending; a live coordinator's claims on the
    same database are left alone. ``holder_alive`` tells whether a claim's holder still runs
    (its owner lock in the shared data_dir, coordinator.store): the claims of a dead one are
    reset at once instead of when they expire (a single coordinator restarted after a crash
    does not wait out its own old claims). Returns how many items."""
    now = now or utcnow()
    with db.session() as s:
        dead: set[str] = set()
        if holder_alive is not None:
            held = select(Artifact.claimed_by).where(
                Artifact.status == ArtifactStatus.converting, Artifact.claim_expires_at >= now
            )
            held_too = select(Model.analysis_claimed_by).where(
                Model.analysis_status == "running", Model.analysis_claim_expires_at >= now
            )
            holders = set(s.scalars(held).all()) | set(s.scalars(held_too).all())
            dead = {h for h in holders if h is not None and not holder_alive(h)}
        a = changed(
            s,
            update(Model)
            .where(
                Model.analysis_status == "running",
                or_(
                    _unheld(Model.analysis_claim_expires_at, now),
                    Model.analysis_claimed_by.in_(dead),
                ),
            )
            .values(
                analysis_status="pending", analysis_claimed_by=None, analysis_claim_expires_at=None
            ),
        )
        b = changed(
            s,
            update(Artifact)
            .where(
                Artifact.status == ArtifactStatus.converting,
                or_(_unheld(Artifact.claim_expires_at, now), Artifact.claimed_by.in_(dead)),
            )
            # updated_at kept: it dates conversions (coordinator.colocation.overlap)
            .values(
                status=ArtifactStatus.pending,
                claimed_by=None,
                claim_expires_at=None,
                updated_at=Artifact.updated_at,
            ),
        )
    fail_unfaithful(db)  # a database an older version left: no unverified artifact runs
    return a + b


def release_claims(db: Database, instance: str) -> int:
    """The items ``instance`` claimed go back to pending (its shutdown: another coordinator,
    or this one's next start, runs them). Returns how many."""
    with db.session() as s:
        a = changed(
            s,
            update(Model)
            .where(Model.analysis_status == "running", Model.analysis_claimed_by == instance)
            .values(
                analysis_status="pending", analysis_claimed_by=None, analysis_claim_expires_at=None
            ),
        )
        b = changed(
            s,
            update(Artifact)
            .where(Artifact.status == ArtifactStatus.converting, Artifact.claimed_by == instance)
            .values(
                status=ArtifactStatus.pending,
                claimed_by=None,
                claim_expires_at=None,
                updated_at=Artifact.updated_at,
            ),
        )
    return a + b


def fail_unfaithful(db: Database) -> int:
    """Artifacts an older version marked ready although their stored report says the fidelity
    check failed (there was no gate) become failed, and so do their jobs that have not run;
    returns how many artifacts."""
    with db.session() as s:
        rows = s.execute(
            select(Artifact.id, Artifact.report).where(Artifact.status == ArtifactStatus.ready)
        ).all()
        n = 0
        for art_id, report in rows:
            fid = (report or {}).get("fidelity")
            if not isinstance(fid, dict) or fid.get("passed") is not False:
                continue
            gate = fidelity_gate(report)
            error = f"fidelity check failed: {gate['verdict']}"
            n += changed(
                s,
                update(Artifact)
                .where(Artifact.id == art_id, Artifact.status == ArtifactStatus.ready)
                # updated_at kept: it dates conversions (coordinator.colocation.overlap)
                .values(
                    status=ArtifactStatus.failed,
                    error=error,
                    report={**report, "fidelity_gate": gate},
                    updated_at=Artifact.updated_at,
                ),
            )
            s.execute(
                update(Job)
                .where(
                    Job.artifact_id == art_id,
                    Job.status.in_((JobStatus.waiting, JobStatus.queued)),
                )
                .values(
                    status=JobStatus.failed,
                    error=f"artifact conversion failed: {error}",
                    updated_at=utcnow(),
                )
            )
            log.warning("artifact %d: %s (was ready)", art_id, error)
    return n


def reconvert_corrupt(db: Database, sha256: str, why: str) -> list[int]:
    """A stored artifact blob no longer hashes to its name (found by a download): every ready
    artifact stored as it goes back to pending, so the dispatcher converts it again from its
    model, and its queued jobs wait for it (no attempt counted). Returns the artifact ids."""
    with db.session() as s:
        ids = list(
            s.scalars(
                select(Artifact.id).where(
                    Artifact.sha256 == sha256, Artifact.status == ArtifactStatus.ready
                )
            ).all()
        )
        for art_id in ids:
            changed(
                s,
                update(Artifact)
                .where(Artifact.id == art_id, Artifact.status == ArtifactStatus.ready)
                .values(
                    status=ArtifactStatus.pending,
                    error=f"re-converting: {why}",
                    sha256=None,
                    size=None,
                    report=None,
                    updated_at=utcnow(),
                ),
            )
            for job in s.scalars(
                select(Job).where(Job.artifact_id == art_id, Job.status == JobStatus.queued)
            ).all():
                job.status = JobStatus.waiting
                queue._event(job, "waiting for re-conversion", detail=why)
    for art_id in ids:
        log.error("artifact %d: %s; converting it again", art_id, why)
    return ids


def hold_leased_jobs(s: Session, artifact_id: int, agent_id: int, why: str) -> int:
    """Jobs of ``artifact_id`` leased by ``agent_id``, whose artifact cannot be downloaded
    because it is not ready (being converted again), go back to waiting without counting an
    attempt: they are queued again when the artifact is ready. Returns how many."""
    jobs = s.scalars(
        select(Job).where(
            Job.artifact_id == artifact_id,
            Job.status == JobStatus.leased,
            Job.leased_by == agent_id,
        )
    ).all()
    for job in jobs:
        job.status = JobStatus.waiting
        job.lease_id = job.lease_expires_at = job.leased_by = None
        job.updated_at = utcnow()
        queue._event(job, "lease released", agent=agent_id, detail=why)
    return len(jobs)


def _fill_labels(model: Model, found: dict[str, Any]) -> None:
    """The user's labels win; analysis or conversion (whichever finishes first: both read the
    model's metadata) fill what was not given, so results never wait for the analysis."""
    if not model.arch and isinstance(found.get("arch"), str) and found["arch"]:
        model.arch = found["arch"]
    if not model.algorithm and isinstance(found.get("algorithm"), str) and found["algorithm"]:
        model.algorithm = found["algorithm"].lower()


def fidelity_gate(summary: dict[str, Any]) -> dict[str, Any]:
    """The coordinator's decision on a converted artifact, from its converter summary: only an
    artifact whose fidelity check passed is benchmarked (DESIGN: an artifact that failed its
    fidelity check never produces a number in a table or OM); no report counts as failed.

    ``deviations``: how a passing artifact knowingly computes something other than the ONNX
    model — the back end's own list (``fidelity.deviations``) and a binary-conv padding that
    is not the ONNX model's zero padding (``padding_mode``, which every back end reports:
    daBNN pads with −1, LCE without exact padding with +1). Shown, with the measured
    difference from onnxruntime, never hidden; they do not block."""
    fid = summary.get("fidelity")
    if not isinstance(fid, dict):
        return {
            "passed": False,
            "verdict": "no fidelity report: the converter did not verify the artifact",
            "deviations": [],
        }
    passed = fid.get("passed") is True
    verdict = str(fid.get("verdict") or "")
    if verdict.startswith("failed: "):
        verdict = verdict[len("failed: ") :]
    verdict = verdict or ("passed" if passed else "failed without a verdict")
    deviations = [str(d) for d in fid.get("deviations") or [] if d]
    short = list(deviations)  # for the verdict: without the long explanations
    mode = summary.get("padding_mode")
    raw_padding = summary.get("padding")
    padding: dict[str, Any] = raw_padding if isinstance(raw_padding, dict) else {}
    padded = padding.get("padded_binary_convs")
    if isinstance(mode, str) and mode != "zero" and padded != 0:
        value = {"minus_one": "-1", "one": "+1"}.get(mode, mode)
        text = f"binary convs padded with {value} (padding_mode {mode}), "
        text += "where the ONNX model pads with 0"
        if isinstance(padded, int):
            text += f" ({padded} padded binary conv{'s' if padded != 1 else ''})"
        raw_vs = fid.get("vs_onnx")
        vs: dict[str, Any] = raw_vs if isinstance(raw_vs, dict) else fid
        err, top1 = vs.get("max_rel_err"), vs.get("top1_agreement")
        if isinstance(err, int | float) and isinstance(top1, int | float):
            text += f": differs from onnxruntime by max rel err {err:.3g}, top-1 agreement "
            text += f"{top1:.0%}"
        short.append(text)
        if isinstance(padding.get("note"), str):
            text += f". {padding['note']}"
        deviations.append(text)
    if passed and short:
        verdict += f"; deviates from the ONNX model by design: {'; '.join(short)}"
    return {"passed": passed, "verdict": verdict, "deviations": deviations}


class ConversionDispatcher:
    def __init__(
        self,
        settings: CoordinatorSettings,
        db: Database,
        store: BlobStore,
        work_signal: Signal,
        jobs_signal: Signal,
        instance: str = "",
    ) -> None:
        self.settings = settings
        self.db = db
        self.store = store
        self.work_signal = work_signal
        self.jobs_signal = jobs_signal
        # who this coordinator is in the claims (coordinator.context.instance_id)
        self.instance = instance or f"dispatcher:{os.getpid()}:{id(self):x}"
        self._task: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._procs: set[asyncio.subprocess.Process] = set()
        self._stopping = False

    # -------------------------------------------------------------- lifecycle

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="conversion-dispatcher")

    async def stop(self) -> None:
        self._stopping = True
        for proc in list(self._procs):
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        tasks = [t for t in [self._task, *self._running] if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for proc in list(self._procs):
            with contextlib.suppress(Exception):
                await proc.wait()
        # interrupted items: another coordinator runs them now, or this one after its restart
        try:
            released = await asyncio.to_thread(release_claims, self.db, self.instance)
        except Exception as exc:  # database unreachable: the claims expire instead
            log.warning("releasing this coordinator's claims failed (%s); they expire", exc)
            return
        if released:
            log.info("released %d claimed analysis/conversion item(s)", released)
            self.work_signal.notify()

    # -------------------------------------------------------------- loop

    async def _loop(self) -> None:
        workers = max(1, self.settings.conversion_workers)
        slots = asyncio.Semaphore(workers)
        while not self._stopping:
            await slots.acquire()
            token = self.work_signal.token()
            try:
                item = await asyncio.to_thread(self._claim)
            except Exception:
                log.exception("claiming conversion work failed")
                item = None
            if item is None:
                slots.release()
                await Signal.wait(token, self.settings.conversion_poll_seconds)
                continue
            task = asyncio.create_task(self._run_item(item, slots))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    def _claim(self) -> WorkItem | None:
        if colocation.isolating(self.settings):
            with self.db.session() as s:
                if colocation.measuring_here(s, self.settings):
                    return None  # a device on this machine measures: convert after it
        # conversions first: they unblock waiting jobs; an analysis is informational
        return self._claim_artifact() or self._claim_analysis()

    def _claim_until(self) -> tuple[datetime, datetime]:
        now = utcnow()
        return now, now + timedelta(seconds=self.settings.conversion_claim_seconds)

    def _claim_artifact(self) -> WorkItem | None:
        now, until = self._claim_until()
        # pending, or converting under a claim that expired (its coordinator died)
        claimable = or_(
            Artifact.status == ArtifactStatus.pending,
            and_(Artifact.status == ArtifactStatus.converting, Artifact.claim_expires_at < now),
        )
        with self.db.session() as s:
            for art_id, status, holder in s.execute(
                select(Artifact.id, Artifact.status, Artifact.claimed_by)
                .where(claimable)
                .order_by(Artifact.id)
            ).all():
                # compare-and-set: of coordinators racing for it one changes the row (on
                # PostgreSQL the others re-check the WHERE after its commit and change none)
                claimed = changed(
                    s,
                    update(Artifact)
                    .where(Artifact.id == art_id, claimable)
                    .values(
                        status=ArtifactStatus.converting,
                        claimed_by=self.instance,
                        claim_expires_at=until,
                        updated_at=now,
                    ),
                )
                if claimed == 1:
                    art = s.get(Artifact, art_id)
                    assert art is not None
                    # a pending artifact keeps who converted it last: no takeover
                    taken = holder if status == ArtifactStatus.converting else None
                    self._log_claim("artifact", art_id, taken, art.library)
                    return WorkItem(
                        "convert", art_id, self.store.path(art.model.sha256), art.library
                    )
        return None

    def _claim_analysis(self) -> WorkItem | None:
        now, until = self._claim_until()
        claimable = or_(
            Model.analysis_status == "pending",
            and_(Model.analysis_status == "running", Model.analysis_claim_expires_at < now),
        )
        with self.db.session() as s:
            for model_id, status, holder in s.execute(
                select(Model.id, Model.analysis_status, Model.analysis_claimed_by)
                .where(claimable)
                .order_by(Model.id)
            ).all():
                claimed = changed(
                    s,
                    update(Model)
                    .where(Model.id == model_id, claimable)
                    .values(
                        analysis_status="running",
                        analysis_claimed_by=self.instance,
                        analysis_claim_expires_at=until,
                    ),
                )
                if claimed == 1:
                    model = s.get(Model, model_id)
                    assert model is not None
                    taken = holder if status == "running" else None
                    self._log_claim("analysis of model", model_id, taken, None)
                    return WorkItem("analyze", model_id, self.store.path(model.sha256))
        return None

    def _log_claim(self, what: str, row_id: int, holder: str | None, library: str | None) -> None:
        lib = f" ({library})" if library else ""
        if holder and holder != self.instance:
            log.warning(
                "%s %d%s: claim of %s expired (its coordinator died?): taken over by %s",
                what,
                row_id,
                lib,
                holder,
                self.instance,
            )
        else:
            log.info("%s %d%s: claimed by %s", what, row_id, lib, self.instance)

    # -------------------------------------------------------------- claims held

    def _set_claim_expiry(self, item: WorkItem, until: datetime | None) -> Update:
        """The compare-and-set on ``item``'s claim: its expiry becomes ``until`` (None: held
        for good, as its outcome is stored) while this coordinator still holds it."""
        if item.kind == "convert":
            return (
                update(Artifact)
                .where(
                    Artifact.id == item.id,
                    Artifact.status == ArtifactStatus.converting,
                    Artifact.claimed_by == self.instance,
                )
                .values(claim_expires_at=until, updated_at=Artifact.updated_at)
            )
        return (
            update(Model)
            .where(
                Model.id == item.id,
                Model.analysis_status == "running",
                Model.analysis_claimed_by == self.instance,
            )
            .values(analysis_claim_expires_at=until)
        )

    def _renew_claim(self, item: WorkItem) -> str:
        """Extend this coordinator's claim on ``item``: "held"; "done" when its outcome was
        stored meanwhile; "lost" when another coordinator took it over."""
        _, until = self._claim_until()
        with self.db.session() as s:
            if changed(s, self._set_claim_expiry(item, until)) == 1:
                return "held"
            if item.kind == "convert":
                holder = s.scalar(select(Artifact.claimed_by).where(Artifact.id == item.id))
            else:
                holder = s.scalar(select(Model.analysis_claimed_by).where(Model.id == item.id))
            return "done" if holder == self.instance else "lost"

    def _hold(self, s: Session, item: WorkItem) -> bool:
        """In the session that stores ``item``'s outcome: whether this coordinator still
        holds its claim. The UPDATE locks the row (PostgreSQL) or the database (SQLite) until
        that session commits, so nobody takes the item over in between."""
        if changed(s, self._set_claim_expiry(item, None)) == 1:
            return True
        log.warning(
            "%s %d: this coordinator's claim was taken over; its outcome is discarded",
            item.kind,
            item.id,
        )
        return False

    async def _keep_claim(self, item: WorkItem) -> None:
        """Renew the claim on ``item`` while it runs; returns once the claim is lost."""
        interval = self.settings.conversion_claim_seconds / 3
        while True:
            await asyncio.sleep(interval)
            try:
                state = await asyncio.to_thread(self._renew_claim, item)
            except Exception as exc:  # database unreachable: try again; the claim may expire
                log.warning("%s %d: renewing the claim failed (%s)", item.kind, item.id, exc)
                continue
            if state == "done":  # the outcome is stored; the work task is ending
                await asyncio.Future()  # until cancelled by _run_item
            if state == "lost":
                log.warning(
                    "%s %d: claim lost (expired and taken over): stopping its worker",
                    item.kind,
                    item.id,
                )
                return

    async def _run_item(self, item: WorkItem, slots: asyncio.Semaphore) -> None:
        work = asyncio.create_task(self._work(item))
        keeper = asyncio.create_task(self._keep_claim(item))
        try:
            # the keeper returns only when the claim is lost: then the work stops
            await asyncio.wait({work, keeper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (work, keeper):
                t.cancel()
            await asyncio.gather(work, keeper, return_exceptions=True)
            slots.release()
            self.work_signal.notify()
            # devices on this machine may have waited for this item (coordinator.colocation)
            self.jobs_signal.notify()

    async def _work(self, item: WorkItem) -> None:
        try:
            problem = await asyncio.to_thread(self._model_problem, item)
            if problem is not None:
                outcome = Outcome(False, {}, problem)
                if item.kind == "analyze":
                    await asyncio.to_thread(self._finish_analysis, item, outcome)
                else:  # a failed outcome never reads the output path
                    await asyncio.to_thread(
                        self._finish_conversion, item, outcome, Path(os.devnull)
                    )
            elif item.kind == "analyze":
                outcome = await self._timed_worker(item, ["analyze", str(item.model_path)])
                await asyncio.to_thread(self._finish_analysis, item, outcome)
            else:
                out = self.store.tmp_path(f"artifact-{item.id}-")
                try:
                    outcome = await self._timed_worker(
                        item, ["convert", str(item.model_path), str(item.library), str(out)]
                    )
                    await asyncio.to_thread(self._finish_conversion, item, outcome, out)
                finally:
                    out.unlink(missing_ok=True)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s %d: storing the outcome failed", item.kind, item.id)

    def _model_problem(self, item: WorkItem) -> str | None:
        """Why the stored model cannot be converted or analysed (its blob is missing, or its
        bytes no longer hash to its name: a corrupt blob is moved to quarantine/, so uploading
        the model again stores it afresh), or None."""
        sha = item.model_path.name
        try:
            corrupt = self.store.verify(sha)
        except FileNotFoundError:
            return f"stored model is missing: blob {sha} is not in the store; upload it again"
        if corrupt is None:
            return None
        moved = self.store.quarantine(sha)
        log.error("model blob %s hashes to %s: corrupt; moved to %s", sha, corrupt.actual, moved)
        return (
            f"stored model is corrupt: its blob {sha} now hashes to {corrupt.actual} (the bytes "
            "changed on disk after the upload); upload the model again, then retry the artifact"
        )

    async def _timed_worker(self, item: WorkItem, args: list[str]) -> Outcome:
        """``_run_worker``, its wall time observed for /metrics (coordinator.telemetry)."""
        started = time.monotonic()
        outcome = await self._run_worker(args)
        what = "analysis" if item.kind == "analyze" else str(item.library)
        verdict = "ok" if outcome.ok else ("timeout" if "timed out" in outcome.error else "failed")
        telemetry.observe_conversion(what, verdict, time.monotonic() - started)
        return outcome

    async def _run_worker(self, args: list[str]) -> Outcome:
        result_path = self.store.tmp_path("result-", ".json")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in [_PROJECT_ROOT, env.get("PYTHONPATH", "")] if p
        )
        # the worker ends itself when this process dies (coordinator.worker.die_with_parent);
        # it is started from the event loop's thread, which lives as long as the process
        env[worker.PARENT_ENV] = str(os.getpid())
        env[worker.MEMORY_ENV] = str(max(0, self.settings.worker_max_memory_mb))
        started = time.monotonic()
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "coordinator.worker",
                *args,
                str(result_path),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
            )
            self._procs.add(proc)
            try:
                output, _ = await asyncio.wait_for(
                    proc.communicate(), self.settings.conversion_timeout_seconds
                )
            except asyncio.CancelledError:  # the claim was lost, or shutdown
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                raise
            except TimeoutError:
                proc.kill()
                await proc.wait()
                return Outcome(
                    False,
                    {},
                    (
                        f"converter timed out after {self.settings.conversion_timeout_seconds:g} s "
                        "(conversion_timeout_seconds)"
                    ),
                )
            finally:
                self._procs.discard(proc)
            text = output.decode(errors="replace")
            if text.strip():
                log.info("worker %s output:\n%s", args[0], text[-4000:])
            try:
                payload = json.loads(result_path.read_text())
            except (OSError, ValueError):
                tail = text.strip().splitlines()[-1:] or [""]
                error = f"converter process died (exit code {proc.returncode}) {tail[0]}".strip()
                if self.settings.worker_max_memory_mb > 0:  # C code may abort when out of memory
                    error += (
                        "; it may have run out of memory (worker_max_memory_mb="
                        f"{self.settings.worker_max_memory_mb})"
                    )
                return Outcome(False, {}, error)
        finally:
            result_path.unlink(missing_ok=True)
        elapsed = time.monotonic() - started
        if payload.get("ok"):
            result = dict(payload.get("result") or {})
            return Outcome(True, result | {"duration_s": round(elapsed, 3)})
        return Outcome(
            False,
            {},
            str(payload.get("error") or "conversion failed"),
            user_error=bool(payload.get("user_error")),
        )

    # -------------------------------------------------------------- outcomes

    def _finish_analysis(self, item: WorkItem, outcome: Outcome) -> None:
        with self.db.session() as s:
            if not self._hold(s, item):
                return
            model = s.get(Model, item.id)
            if model is None:
                return
            if outcome.ok:
                model.analysis = outcome.result
                model.analysis_status = "done"
                model.analysis_error = None
                _fill_labels(model, outcome.result)
            else:
                model.analysis_status = "failed"
                model.analysis_error = outcome.error
        log.info("analysis of model %d: %s", item.id, "done" if outcome.ok else outcome.error)

    def _finish_conversion(self, item: WorkItem, outcome: Outcome, out: Path) -> None:
        error = outcome.error
        sha = size = None
        report: dict[str, Any] = {"user_error": outcome.user_error}
        if outcome.ok:
            gate = fidelity_gate(outcome.result)
            # the whole summary stays on the artifact, passed or not: the report says why
            report = {**outcome.result, "fidelity_gate": gate}
            if not gate["passed"]:  # never served, so not stored (the report keeps its hash)
                error = f"fidelity check failed: {gate['verdict']}"
            elif not out.is_file() or out.stat().st_size == 0:
                error = "converter reported success but wrote no output file"
            else:
                sha, size = self.store.put_file(out)
                claimed = outcome.result.get("sha256")
                if isinstance(claimed, str) and claimed and claimed != sha:
                    error = f"converter summary sha256 {claimed} differs from the file's {sha}"
        with self.db.session() as s:
            if not self._hold(s, item):
                return  # a blob stored above stays: content-addressed, harmless
            art = s.get(Artifact, item.id)
            if art is None:
                return
            art.report = report
            if not error:
                _fill_labels(art.model, outcome.result)
                art.status = ArtifactStatus.ready
                art.sha256, art.size = sha, size
                art.error = None
                queued = queue.on_artifact_ready(s, art.id)
            else:
                art.status = ArtifactStatus.failed
                art.error = error
                queued = 0
                queue.on_artifact_failed(s, art.id, error)
        log.info("artifact %d (%s): %s", item.id, item.library, error or f"ready, sha256 {sha}")
        if queued:
            self.jobs_signal.notify()

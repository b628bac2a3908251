"""Background analysis and conversion: never inside a request.

The dispatcher (an asyncio task started in the app's lifespan) claims work from the database
(models with ``analysis_status='pending'``, artifacts with ``status='pending'``) with a
compare-and-set, and runs each item in a separate ``python -m coordinator.worker`` process with
a timeout. Because the queue *is* the database, work pending when the server stopped is picked
up after a restart; items interrupted mid-way (``running``/``converting``) are reset to
``pending`` at startup and at shutdown.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

import coordinator
from bnnbench.schemas import ArtifactStatus, JobStatus
from bnnbench.settings import CoordinatorSettings
from coordinator import colocation, queue, worker
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


def recover_interrupted(db: Database) -> int:
    """Work a previous process left half-done goes back to pending (single coordinator)."""
    with db.session() as s:
        a = changed(
            s,
            update(Model)
            .where(Model.analysis_status == "running")
            .values(analysis_status="pending"),
        )
        b = changed(
            s,
            update(Artifact)
            .where(Artifact.status == ArtifactStatus.converting)
            .values(status=ArtifactStatus.pending),
        )
    fail_unfaithful(db)  # a database an older version left: no unverified artifact runs
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
    ) -> None:
        self.settings = settings
        self.db = db
        self.store = store
        self.work_signal = work_signal
        self.jobs_signal = jobs_signal
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
        # interrupted items run again at the next start
        await asyncio.to_thread(recover_interrupted, self.db)

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

    def _claim_artifact(self) -> WorkItem | None:
        with self.db.session() as s:
            for art_id in s.scalars(
                select(Artifact.id)
                .where(Artifact.status == ArtifactStatus.pending)
                .order_by(Artifact.id)
            ).all():
                claimed = changed(
                    s,
                    update(Artifact)
                    .where(Artifact.id == art_id, Artifact.status == ArtifactStatus.pending)
                    .values(status=ArtifactStatus.converting, updated_at=utcnow()),
                )
                if claimed == 1:
                    art = s.get(Artifact, art_id)
                    assert art is not None
                    return WorkItem(
                        "convert", art_id, self.store.path(art.model.sha256), art.library
                    )
        return None

    def _claim_analysis(self) -> WorkItem | None:
        with self.db.session() as s:
            for model_id in s.scalars(
                select(Model.id).where(Model.analysis_status == "pending").order_by(Model.id)
            ).all():
                claimed = changed(
                    s,
                    update(Model)
                    .where(Model.id == model_id, Model.analysis_status == "pending")
                    .values(analysis_status="running"),
                )
                if claimed == 1:
                    model = s.get(Model, model_id)
                    assert model is not None
                    return WorkItem("analyze", model_id, self.store.path(model.sha256))
        return None

    async def _run_item(self, item: WorkItem, slots: asyncio.Semaphore) -> None:
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
                outcome = await self._run_worker(["analyze", str(item.model_path)])
                await asyncio.to_thread(self._finish_analysis, item, outcome)
            else:
                out = self.store.tmp_path(f"artifact-{item.id}-")
                try:
                    outcome = await self._run_worker(
                        ["convert", str(item.model_path), str(item.library), str(out)]
                    )
                    await asyncio.to_thread(self._finish_conversion, item, outcome, out)
                finally:
                    out.unlink(missing_ok=True)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s %d: storing the outcome failed", item.kind, item.id)
        finally:
            slots.release()
            self.work_signal.notify()
            # devices on this machine may have waited for this item (coordinator.colocation)
            self.jobs_signal.notify()

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

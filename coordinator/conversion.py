"""Background analysis and conversion: never inside a request.

The dispatcher (an asyncio task started in the app's lifespan) claims work from the database
(models with ``analysis_status='pending'``, artifacts with ``status='pending'``) with a
compare-and-set, and runs each item in a separate ``python -m coordinator.worker`` process with
a timeout. Because the queue *is* the database, work pending when the server stopped is picked
up after a restart; items interrupted mid-way (``running``/``converting``) are reset to
``pending`` at startup and at shutdown.

A :class:`converters.errors.ConversionError` marks the artifact failed with its message and
fails the jobs waiting for it; the model and every other row and blob stay as they are.
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

import coordinator
from bnnbench.schemas import ArtifactStatus
from bnnbench.settings import CoordinatorSettings
from coordinator import queue
from coordinator.db import Database
from coordinator.models import Artifact, Model, utcnow
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
    return a + b


def _fill_labels(model: Model, found: dict[str, Any]) -> None:
    """The user's labels win; analysis or conversion (whichever finishes first: both read the
    model's metadata) fill what was not given, so results never wait for the analysis."""
    if not model.arch and isinstance(found.get("arch"), str) and found["arch"]:
        model.arch = found["arch"]
    if not model.algorithm and isinstance(found.get("algorithm"), str) and found["algorithm"]:
        model.algorithm = found["algorithm"].lower()


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
            if item.kind == "analyze":
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

    async def _run_worker(self, args: list[str]) -> Outcome:
        result_path = self.store.tmp_path("result-", ".json")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in [_PROJECT_ROOT, env.get("PYTHONPATH", "")] if p
        )
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
                return Outcome(
                    False,
                    {},
                    (f"converter process died (exit code {proc.returncode}) {tail[0]}".strip()),
                )
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
        if outcome.ok:
            if not out.is_file() or out.stat().st_size == 0:
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
            if not error:
                _fill_labels(art.model, outcome.result)
                art.status = ArtifactStatus.ready
                art.sha256, art.size = sha, size
                art.error = None
                art.report = outcome.result
                queued = queue.on_artifact_ready(s, art.id)
            else:
                art.status = ArtifactStatus.failed
                art.error = error
                art.report = {"user_error": outcome.user_error}
                queued = 0
                queue.on_artifact_failed(s, art.id, error)
        log.info("artifact %d (%s): %s", item.id, item.library, error or f"ready, sha256 {sha}")
        if queued:
            self.jobs_signal.notify()

"""The agent loop: register → (heartbeat thread) → lease → fetch artifact → run → report.

Robustness rules:
- Identity (agent id + token) lives in ``cache_dir/agent.json`` so a restarted agent is the same
  agent: at start it registers again with that token (the proof the coordinator asks of a name
  already registered), which keeps its id, token and leases and refreshes runtimes and device.
  A rejected agent token (coordinator lost its database, agent replaced) triggers a fresh
  registration with the enrolment token; a rejected *enrolment* token, or a refusal because a
  live agent already has this name on this device (409), is a configuration error and ends the
  agent with exit code 2 and a message saying so: two agents never fight over one identity.
- Every HTTP call retries through outages (``bnnbench.http.Retry``). A finished result is written to
  ``cache_dir/outbox/`` before it is posted and removed only once the coordinator has answered
  it, so measurements survive a coordinator outage and even an agent restart; if it cannot be
  written (disk full) the result is kept in memory, posted from there and written again later.
- The native engine runs as the ``bnnbench-native`` CLI in a child process with a timeout: a
  hung run is killed and a crash is reported with its signal; the agent keeps serving.
- While a job runs, the heartbeat thread keeps its lease alive. A job whose agent dies is
  requeued by the coordinator when the lease expires (and its run dies with the agent:
  ``agent.transports.local``).
- A heartbeat answered 409 (the job was cancelled, its lease lost, or past its cap) stops the
  run at once: its commands are killed through the run's ``CancelScope`` and the agent moves
  on without posting anything for that lease.
- SIGTERM/SIGINT: when idle, exit at once; during a job, finish it and report, then exit; a
  second signal abandons the job (its lease expires and it is requeued; a result already in
  the outbox is posted by the next start).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from agent import __version__, probe
from agent.cache import ArtifactCache, ArtifactError
from agent.fleet import DeviceSpec, open_transport
from agent.runners import Runner, RunnerError, RunPlan, available_runners
from agent.runners.dabnn import DabnnRunner
from agent.runners.device_cli import DeviceCliRunner
from agent.runners.device_command import DeviceTarget
from agent.runners.lce import LceRunner
from agent.runners.tflite import TFLiteRunner
from agent.transports import LocalTransport, Transport
from agent.transports.base import CancelScope, RunCancelled, TransportError, cancel_scope
from bnnbench.client import BnnbenchClient
from bnnbench.http import ApiError, Backoff, Retry, Stopped
from bnnbench.schemas import JobFailure, JobLease, RegisterRequest, RegisterResponse, ResultIn
from bnnbench.settings import AgentSettings
from bnnbench.tokenfile import TokenFileError, read_token_file

log = logging.getLogger("bnnbench.agent")

T = TypeVar("T")

EXIT_OK = 0
EXIT_CONFIG = 2  # enrolment token rejected, cache dir in use, nothing to run


class AgentConfigError(Exception):
    """A problem only the operator can fix (bad token, cache dir in use); ends the agent."""


class _Interrupted(BaseException):
    """Raised from the signal handler to leave a blocking wait (BaseException: never caught by
    the generic error handling around a job)."""


# ------------------------------------------------------------------ persisted state


@dataclass
class Identity:
    coordinator: str
    name: str
    agent_id: int
    device_id: int
    token: str
    fingerprint: str
    runtimes: dict[str, str]


def _write_private(path: Path, data: str) -> None:
    """Atomic write readable only by the owner (the file holds a bearer token): a temporary
    file, fsynced, renamed over ``path``, the folder fsynced. On OSError (a full disk) the
    temporary file is removed and ``path`` is as it was."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:  # the rename itself survives a power cut once the folder is synced
        dfd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


KEEP_REFUSED = 200  # refused results kept in outbox/refused/ (a few KB each)


class Outbox:
    """Finished results not yet accepted by the coordinator, one JSON file per job.

    A result that cannot be written (disk full, folder unwritable) is kept in memory instead,
    logged, and written again at every ``pending()``: it is still posted, and persisted as soon
    as the disk allows; only an agent exit before either loses it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._memory: dict[int, ResultIn] = {}  # results not (yet) on disk

    def _path(self, job_id: int) -> Path:
        return self.root / f"job-{job_id}.json"

    def put(self, job_id: int, result: ResultIn) -> bool:
        """Keep ``result`` until the coordinator answers it; True when it is on disk."""
        body = {"job_id": job_id, "result": result.model_dump(mode="json")}
        try:
            _write_private(self._path(job_id), json.dumps(body))
        except OSError as exc:
            first = job_id not in self._memory
            self._memory[job_id] = result
            (log.error if first else log.warning)(
                "job %d: cannot write the result to the outbox %s (%s); it is kept in memory "
                "and posted from there (lost if the agent exits before it is posted or written)",
                job_id,
                self.root,
                exc,
            )
            return False
        if self._memory.pop(job_id, None) is not None:
            log.info("job %d: result kept in memory is now in the outbox %s", job_id, self.root)
        return True

    def in_memory_only(self, job_id: int) -> bool:
        return job_id in self._memory

    def refuse(self, job_id: int, result: ResultIn, reason: str) -> Path | None:
        """A result the coordinator refused for good (its lease expired and the job went to
        another agent, the job was cancelled): moved out of the queue into ``refused/``, a
        record of the measurement that never counted, never posted again. The newest
        ``KEEP_REFUSED`` are kept."""
        self.remove(job_id)
        folder = self.root / "refused"
        path = folder / f"job-{job_id}-{result.lease_id[:12]}.json"
        body = {
            "job_id": job_id,
            "refused_at": datetime.now(UTC).isoformat(),
            "reason": reason,
            "result": result.model_dump(mode="json"),
        }
        try:
            folder.mkdir(exist_ok=True)
            _write_private(path, json.dumps(body))
            kept = sorted(folder.glob("job-*.json"), key=lambda q: q.stat().st_mtime)
            for old in kept[: max(len(kept) - KEEP_REFUSED, 0)]:
                old.unlink(missing_ok=True)
        except OSError as exc:  # a record only: the queue itself is already cleared
            log.warning("job %d: cannot keep the refused result in %s (%s)", job_id, folder, exc)
            return None
        return path

    def remove(self, job_id: int) -> None:
        self._memory.pop(job_id, None)
        self._path(job_id).unlink(missing_ok=True)

    def pending(self) -> list[tuple[int, ResultIn]]:
        """Results still to post: those only in memory (each written again first), then the
        files."""
        out = []
        for job_id, result in list(self._memory.items()):
            self.put(job_id, result)
            out.append((job_id, result))
        seen = {job_id for job_id, _ in out}
        for p in sorted(self.root.glob("job-*.json")):
            try:
                body = json.loads(p.read_text())
                job_id = int(body["job_id"])
                if job_id in seen:
                    continue
                out.append((job_id, ResultIn.model_validate(body["result"])))
            except (OSError, ValueError, KeyError) as exc:
                log.error("unreadable outbox entry %s (%s); moved aside", p, exc)
                p.rename(p.with_suffix(".bad"))
        return out


class _DirLock:
    """One agent per cache dir: two agents sharing agent.json would share one identity."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock, documented
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise AgentConfigError(
                f"cache dir {self.path.parent} is in use by another agent (pid {holder}); "
                "give each agent its own --cache-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


# ------------------------------------------------------------------ the agent


class Agent:
    def __init__(
        self,
        settings: AgentSettings,
        *,
        transport: Transport | None = None,
        runners: dict[str, Runner] | None = None,
        max_jobs: int | None = None,
        exit_when_idle: float | None = None,
        spec: DeviceSpec | None = None,
        state_dir: Path | None = None,
        stop_event: threading.Event | None = None,
        replace: bool = False,
    ) -> None:
        self.settings = settings
        # the first registration of this process replaces a live agent of the same name
        # (admin token only; `bnnbench agent --replace`); never a re-registration after a 401
        self._replace = replace
        self.spec = spec or DeviceSpec(url="local://")
        self.transport = transport or (
            open_transport(spec) if spec is not None else LocalTransport()
        )
        self.max_jobs = max_jobs
        self.exit_when_idle = exit_when_idle
        self.cache_dir = Path(settings.cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.cache = ArtifactCache(self.cache_dir)  # host-side, shared by a host's devices
        # identity, outbox and lock are per device: one lease per device
        self.state_dir = Path(state_dir or self.cache_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.outbox = Outbox(self.state_dir / "outbox")
        self.identity_path = self.state_dir / "agent.json"
        self.device = probe.probe(
            self.transport,
            exec_wrapper=self.spec.exec_wrapper,
            abi=self.spec.abi,
            name=self.spec.name,
        )
        self.runners = runners if runners is not None else self._default_runners()
        base = settings.name or socket.gethostname()
        self.name = base if self.spec.scheme == "local" else f"{base}/{self.spec.slug()}"
        self.stop_event = stop_event or threading.Event()  # graceful stop requested
        self._hb_stop = threading.Event()
        # two clients: the heartbeat thread's waits end with its own stop, not the agent's
        self.api = BnnbenchClient(
            settings.coordinator,
            timeout=30.0,
            retry=Retry(max_backoff=settings.max_backoff_seconds, stop=self.stop_event),
        )
        self._hb_api = BnnbenchClient(
            settings.coordinator,
            timeout=max(5.0, settings.heartbeat_seconds),
            retry=Retry(max_backoff=settings.max_backoff_seconds, stop=self._hb_stop),
        )
        self.identity: Identity | None = None
        self._identity_lock = threading.Lock()
        self._fatal: AgentConfigError | None = None
        self._current_job: int | None = None  # the heartbeat extends this job's lease
        self._polling_since: float | None = None  # monotonic start of an open lease poll
        # the running job and the scope its run's commands check: a 409 heartbeat cancels it
        self._run_scope: tuple[int, CancelScope] | None = None
        self._posting: int | None = None  # job whose result is being posted
        self._lease_window: float | None = None  # seconds a fresh lease lasts
        self._interruptible = False
        self._signals = 0
        self.jobs_processed = 0

    def _default_runners(self) -> dict[str, Runner]:
        """In-process runners on this machine; on a board (or under an exec wrapper here) the
        static CLI, plus LCE's and daBNN's benchmark binaries where devices.toml gives their
        paths on the device (``lce_benchmark``, ``dabnn_benchmark``)."""
        tuning = self.settings.runners
        affinity, wrapper = self.spec.default_affinity(), self.spec.exec_wrapper
        target = DeviceTarget(self.transport, self.device, affinity, wrapper)
        cli_dir = Path(self.settings.native_cli_dir) if self.settings.native_cli_dir else None
        if self.spec.scheme == "local" and not self.spec.exec_wrapper:
            # the native engine runs as the CLI in a child process, never in this one: a hung
            # run is killed at its timeout, a crash fails the job and the agent keeps serving
            native = DeviceCliRunner(
                target, cli_dir=cli_dir, timeout_s=tuning.native_timeout_s, in_place=True
            )
            others = available_runners(tuning, exclude=frozenset({"native"}))
            if native.available():
                return {"native": native, **others}
            log.warning("native: %s", native.unavailable_reason)
            return others
        candidates: list[Runner] = [
            DeviceCliRunner(target, cli_dir=cli_dir, timeout_s=tuning.native_timeout_s)
        ]
        if self.spec.lce_benchmark:
            lce = LceRunner("binary", self.spec.lce_benchmark, target=target, settings=tuning)
            candidates.append(lce)
        if "python3" in self.device.tools:  # tflite-runtime there? available() asks the board
            candidates.append(
                TFLiteRunner(
                    transport=self.transport, device=self.device, affinity=affinity, settings=tuning
                )
            )
        if self.spec.dabnn_benchmark:
            dab = DabnnRunner(self.spec.dabnn_benchmark, target=target, settings=tuning)
            candidates.append(dab)
        runners: dict[str, Runner] = {}
        for runner in candidates:
            if runner.available():
                runners[runner.name] = runner
            else:  # the others still serve: one missing binary must not idle the board
                log.warning(
                    "%s: %s: %s",
                    self.spec.url,
                    runner.name,
                    getattr(runner, "unavailable_reason", "unavailable"),
                )
        return runners

    # -------------------------------------------------------------- identity

    def _runtimes(self) -> dict[str, str]:
        return {lib: r.version() for lib, r in sorted(self.runners.items())}

    def _set_identity(self, ident: Identity) -> None:
        self.identity = ident
        self.api.token = ident.token
        self._hb_api.token = ident.token

    def _load_identity(self) -> Identity | None:
        try:
            ident = Identity(**json.loads(self.identity_path.read_text()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as exc:
            log.warning("ignoring unreadable %s (%s)", self.identity_path, exc)
            return None
        current = (self.settings.coordinator.rstrip("/"), self.name, self.device.fingerprint())
        if (ident.coordinator, ident.name, ident.fingerprint) != current:
            log.info("stored identity is for another coordinator/name/device; registering anew")
            return None
        if ident.runtimes != self._runtimes():
            log.info("runtimes changed since registration; registering again to advertise them")
        return ident

    def _enrolment_token(self) -> str:
        """The token to register with: ``token`` or the contents of ``token_file`` (read now,
        so a file replaced since the start is honoured)."""
        s = self.settings
        if s.token and s.token_file:
            raise AgentConfigError(
                "both an enrolment token (--token, BNNBENCH_AGENT_TOKEN) and a token file "
                "(--token-file, BNNBENCH_AGENT_TOKEN_FILE) are given: give one"
            )
        if s.token_file:
            try:
                return read_token_file(s.token_file)
            except TokenFileError as exc:
                raise AgentConfigError(f"{exc} (--token-file, BNNBENCH_AGENT_TOKEN_FILE)") from None
        if not s.token:
            raise AgentConfigError(
                "no enrolment token: pass --token-file FILE (or set BNNBENCH_AGENT_TOKEN) with "
                "an enrolment token (`bnnbench tokens create` on the coordinator) to register "
                "this agent"
            )
        return s.token

    def _request(self, *, replace: bool = False) -> RegisterRequest:
        return RegisterRequest(
            name=self.name, device=self.device, runtimes=self._runtimes(), replace=replace
        )

    def register(self, api: BnnbenchClient | None = None) -> Identity:
        """Register with the enrolment token (a new agent, or one whose token the coordinator
        no longer knows)."""
        api = api or self.api
        token = self._enrolment_token()
        replace, self._replace = self._replace, False
        try:
            reg = api.register_agent(self._request(replace=replace), token=token)
        except ApiError as exc:
            if exc.status_code in (401, 403):
                raise AgentConfigError(
                    f"the coordinator at {self.settings.coordinator} rejected the enrolment "
                    f"token (HTTP {exc.status_code}: {exc.detail}); check --token-file / "
                    "BNNBENCH_AGENT_TOKEN"
                ) from None
            if exc.status_code == 409:
                raise AgentConfigError(
                    f"registration of {self.name!r} refused (HTTP 409): {exc.detail}"
                ) from None
            raise AgentConfigError(
                f"registration refused (HTTP {exc.status_code}: {exc.detail})"
            ) from None
        return self._store(reg, "registered as agent")

    def _store(self, reg: RegisterResponse, what: str) -> Identity:
        ident = Identity(
            coordinator=self.settings.coordinator.rstrip("/"),
            name=self.name,
            agent_id=reg.agent_id,
            device_id=reg.device_id,
            token=reg.token,
            fingerprint=self.device.fingerprint(),
            runtimes=self._runtimes(),
        )
        _write_private(self.identity_path, json.dumps(asdict(ident), indent=2))
        self._set_identity(ident)
        log.info("%s %d (device %d) runtimes=%s", what, reg.agent_id, reg.device_id, ident.runtimes)
        return ident

    def resume(self, ident: Identity) -> Identity:
        """Register again with the stored identity's own token: the same agent (id, token and
        leases kept), its runtimes and device attributes refreshed. A token the coordinator
        no longer knows leads to a fresh registration with the enrolment token."""
        try:
            reg = self.api.register_agent(self._request(), token=ident.token)
        except ApiError as exc:
            if exc.status_code == 401:
                log.warning("the coordinator rejected this agent's token; registering again")
                return self.register()
            if exc.status_code == 403:
                log.warning("%s; registering again", exc.detail)
                return self.register()
            if exc.status_code in (404, 405, 422) and ident.runtimes == self._runtimes():
                # a coordinator from before re-registration by proof: the identity stands
                log.warning(
                    "could not refresh the registration (HTTP %d: %s); keeping the identity",
                    exc.status_code,
                    exc.detail,
                )
                self._set_identity(ident)
                return ident
            raise AgentConfigError(
                f"registration with this agent's own token refused (HTTP {exc.status_code}: "
                f"{exc.detail})"
            ) from None
        if reg.agent_id != ident.agent_id or reg.token != ident.token:
            return self._store(reg, "registered as agent")
        self._set_identity(ident)
        if ident.runtimes != self._runtimes():
            return self._store(reg, "runtimes updated: agent")
        return ident

    def _reregister(self, stale_token: str, api: BnnbenchClient) -> None:
        with self._identity_lock:
            if self.identity is not None and self.identity.token != stale_token:
                return  # the other thread already did it
            log.warning("the coordinator rejected this agent's token; registering again")
            self.register(api)

    def _authed(self, api: BnnbenchClient, call: Callable[[], T]) -> T:
        """``call`` (a request through ``api``); a 401 leads to one re-registration and one
        retry."""
        token = api.token
        try:
            return call()
        except ApiError as exc:
            if exc.status_code != 401:
                raise
        self._reregister(token, api)
        return call()

    # -------------------------------------------------------------- heartbeat

    def _heartbeat_interval(self) -> float:
        interval = self.settings.heartbeat_seconds
        if self._current_job is not None and self._lease_window:
            # at least three beats per lease period, whatever the configured interval
            interval = min(interval, self._lease_window / 3)
        return max(interval, 0.05)

    def _heartbeat_loop(self) -> None:
        while not self._hb_stop.wait(self._heartbeat_interval()):
            job = self._current_job
            polling = self._polling_since
            if job is None and polling is not None and time.monotonic() - polling < 15.0:
                # an idle agent's open long poll already tells the coordinator it is alive
                # (the lease call marks last_seen): a beat would only add load at fleet scale
                continue
            try:
                # one try per beat: the next beat is the retry
                self._authed(self._hb_api, partial(self._hb_api.heartbeat, job, retry=False))
            except ApiError as exc:
                if exc.status_code == 0:
                    log.warning("heartbeat failed, %s", exc.detail)
                    continue
                # a 409 racing with our own result post is expected: the job just finished
                racing = exc.status_code == 409 and job is not None and job == self._posting
                (log.debug if racing else log.warning)(
                    "heartbeat (job %s): HTTP %d: %s", job, exc.status_code, exc.detail
                )
                if exc.status_code == 409 and job is not None and not racing:
                    self._stop_run(job, exc.detail)
            except AgentConfigError as exc:
                self._fatal = exc
                self.stop_event.set()
                return
            except Exception:  # never let the heartbeat thread die silently
                log.exception("heartbeat failed")

    def _stop_run(self, job: int, why: str) -> None:
        """The coordinator no longer wants this lease's run (the job was cancelled, the lease
        expired and went elsewhere, or it is past its cap): kill the run now rather than
        measure to the end for a result nobody accepts."""
        held = self._run_scope
        if held is None or held[0] != job or held[1].cancelled:
            return
        log.warning("job %d: stopping its run: the coordinator refused its heartbeat", job)
        held[1].cancel(f"heartbeat refused (HTTP 409: {why})")

    # -------------------------------------------------------------- jobs

    def lease(self, wait: float) -> JobLease | None:
        self._polling_since = time.monotonic()
        try:
            return self._authed(self.api, partial(self.api.lease, wait))
        finally:
            self._polling_since = None

    def _run_in_thread(self, fn: Callable[[], T], scope: CancelScope) -> T:
        """Run a (C-bound) benchmark off the main thread so signals stay deliverable; the
        transports it calls there stop at ``scope``'s cancel."""
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                with cancel_scope(scope):
                    box["out"] = fn()
            except BaseException as exc:  # handed to the main thread
                box["exc"] = exc

        t = threading.Thread(target=target, name="bnnbench-run", daemon=True)
        t.start()
        while t.is_alive():
            t.join(0.2)
        if "exc" in box:
            raise box["exc"]
        return box["out"]

    def _fetch(self, lease: JobLease) -> Path:
        return self._authed(self.api, partial(self.cache.fetch, self.api, lease.artifact))

    def process(self, lease: JobLease) -> None:
        job = lease.job_id
        expires = lease.lease_expires_at
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=UTC)
        window = (expires - datetime.now(UTC)).total_seconds()
        self._lease_window = window if window > 0 else None  # None: clocks disagree, ignore
        scope = CancelScope()
        self._run_scope = (job, scope)
        self._current_job = job
        log.info(
            "leased job %d: %s artifact %d (sha256 %s), threads=%d warmup=%d runs=%d",
            job,
            lease.artifact.library,
            lease.artifact.id,
            lease.artifact.sha256[:12],
            lease.threads,
            lease.warmup,
            lease.runs,
        )
        try:
            result = self._measure(lease)
            if result is None:
                return
            if scope.cancelled:  # refused just as the run ended: the result would be too
                log.warning("job %d: run finished but %s; not posted", job, scope.reason)
                self.outbox.refuse(job, result, scope.reason)
                return
            self.outbox.put(job, result)  # from here on the measurement cannot be lost
            self._posting = job
            self.deliver(job, result)
        finally:
            self._current_job = self._posting = None
            self._run_scope = None

    def _measure(self, lease: JobLease) -> ResultIn | None:
        """Fetch and run; on failure report it and return None; None without a report when
        the run's scope was cancelled (the coordinator refuses anything for this lease)."""
        held = self._run_scope
        scope = held[1] if held is not None and held[0] == lease.job_id else CancelScope()
        try:
            runner = self.runners.get(str(lease.artifact.library))
            if runner is None:
                raise RunnerError(
                    f"this agent has no runner for library {lease.artifact.library!s} "
                    f"(available: {', '.join(self.runners) or 'none'})"
                )
            path = self._fetch(lease)
            if lease.protocol.cooldown_s > 0:
                log.info("job %d: cooling down %.1f s", lease.job_id, lease.protocol.cooldown_s)
                end = time.monotonic() + lease.protocol.cooldown_s
                while (left := end - time.monotonic()) > 0:
                    if self.stop_event.wait(min(left, 0.2)):
                        raise Stopped()
                    scope.check()
            scope.check()
            log.info("running job %d with %s on %s", lease.job_id, runner.name, self.spec.url)
            before = probe.readings(self.transport)
            # every runner takes the protocol and applies what its tool supports
            out = self._run_in_thread(lambda: runner.benchmark(path, RunPlan.of(lease)), scope)
            scope.check()
            after = probe.readings(self.transport)
        except Stopped:
            raise
        except Exception as exc:
            if isinstance(exc, RunCancelled) or scope.cancelled:
                log.warning(
                    "job %d: run stopped (%s); nothing posted", lease.job_id, scope.reason or exc
                )
                return None
            error, retryable = _failure(exc)
            self.fail(lease, error, retryable=retryable)
            return None
        env = {
            "readings_before": before,
            "readings_after": after,
            "affinity_cpus": out.extra.get("affinity_cpus"),
            "device": {
                "fingerprint": self.device.fingerprint(),
                "label": self.device.label(),
                "url": self.spec.url,
                "emulated": self.device.emulated,
                "exec_wrapper": self.device.exec_wrapper,
            },
            "protocol": lease.protocol.model_dump(),
            "agent": {
                "id": self.identity.agent_id if self.identity else None,
                "name": self.name,
                "version": __version__,
            },
            "transport": self.transport.name,
            "threads": lease.threads,
            "warmup": lease.warmup,
            "runs": lease.runs,
            "artifact_sha256": lease.artifact.sha256,
            "runner": out.extra,
        }
        return ResultIn(
            lease_id=lease.lease_id,
            samples_ms=out.samples_ms,
            runtime_version=out.runtime_version,
            env=env,
        )

    def deliver(self, job_id: int, result: ResultIn) -> bool:
        """Post a result; True once the coordinator has answered it for good."""
        try:
            self._authed(self.api, partial(self.api.post_result, job_id, result))
        except Stopped:
            if self.outbox.in_memory_only(job_id):
                log.error(
                    "job %d: stopping with its result only in memory (the outbox %s could not "
                    "be written): the result is lost",
                    job_id,
                    self.outbox.root,
                )
            else:
                log.warning(
                    "job %d: result kept in %s for the next start", job_id, self.outbox.root
                )
            return False
        except ApiError as exc:
            if not 400 <= exc.status_code < 500:
                log.error(
                    "job %d: result not accepted yet (HTTP %d); kept", job_id, exc.status_code
                )
                return False
            # the lease was lost (expired and re-leased) or the job is gone: nothing to retry;
            # the measurement is kept as a record that never counted
            kept = self.outbox.refuse(job_id, result, f"HTTP {exc.status_code}: {exc.detail}")
            log.error(
                "job %d: coordinator refused the result (HTTP %d: %s); not retried%s",
                job_id,
                exc.status_code,
                exc.detail,
                f", kept in {kept}" if kept else "",
            )
            return True
        med = sorted(result.samples_ms)[len(result.samples_ms) // 2]
        log.info("job %d done: %d samples, median %.3f ms", job_id, len(result.samples_ms), med)
        self.outbox.remove(job_id)
        return True

    def fail(self, lease: JobLease, error: str, *, retryable: bool = True) -> None:
        log.error("job %d failed: %s", lease.job_id, error)
        failure = JobFailure(lease_id=lease.lease_id, error=error[:10000], retryable=retryable)
        try:
            self._authed(self.api, partial(self.api.post_failure, lease.job_id, failure))
        except Stopped:
            return  # the lease expires and the job is retried elsewhere
        except ApiError as exc:
            log.error(
                "job %d: failure report refused (HTTP %d: %s)",
                lease.job_id,
                exc.status_code,
                exc.detail,
            )

    def flush_outbox(self) -> None:
        for job_id, result in self.outbox.pending():
            log.info("re-posting kept result of job %d", job_id)
            if not self.deliver(job_id, result):
                return  # coordinator still unhappy; try again next round

    # -------------------------------------------------------------- lifecycle

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self._signals += 1
        name = signal.Signals(signum).name
        self.stop_event.set()
        if self._current_job is None or self._signals > 1:
            if self._current_job is not None:
                log.warning(
                    "%s again: abandoning job %d (its lease will expire)", name, self._current_job
                )
            if self._interruptible or self._current_job is not None:
                raise _Interrupted(name)
        else:
            log.info(
                "%s: finishing job %d, then exiting (signal again to abandon)",
                name,
                self._current_job,
            )

    def run(self) -> int:
        """Run until stopped, ``max_jobs`` processed or idle for ``exit_when_idle`` seconds."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        lock = _DirLock(self.state_dir / "agent.lock")
        heartbeat: threading.Thread | None = None
        try:
            lock.acquire()
            if not self.runners:
                raise AgentConfigError(
                    "no runtime is available on this machine (the native engine could not be "
                    "loaded); nothing to benchmark with"
                )
            ident = self._load_identity()
            if ident is not None:
                log.info("reusing identity: agent %d (%s)", ident.agent_id, self.identity_path)
                self.resume(ident)
            else:
                self.register()
            self._replace = False  # a later re-registration (after a 401) never replaces
            heartbeat = threading.Thread(
                target=self._heartbeat_loop, name="bnnbench-heartbeat", daemon=True
            )
            heartbeat.start()
            self._loop()
            if self._fatal:
                raise self._fatal
            return EXIT_OK
        except AgentConfigError as exc:
            log.error("%s", exc)
            return EXIT_CONFIG
        except (_Interrupted, Stopped):
            log.info("stopped")
            return EXIT_OK
        finally:
            self._hb_stop.set()
            if heartbeat is not None:
                heartbeat.join(timeout=5)
            self.api.close()
            self._hb_api.close()
            lock.release()

    def _loop(self) -> None:
        idle_since = time.monotonic()
        refused = Backoff(base=1.0, cap=self.settings.max_backoff_seconds)
        while not self.stop_event.is_set():
            self.flush_outbox()
            if self.max_jobs is not None and self.jobs_processed >= self.max_jobs:
                log.info("processed %d job(s); exiting", self.jobs_processed)
                return
            wait = self.settings.poll_wait_seconds
            if self.exit_when_idle is not None:
                left = self.exit_when_idle - (time.monotonic() - idle_since)
                if left <= 0:
                    log.info("idle for %.1fs; exiting", self.exit_when_idle)
                    return
                wait = min(wait, left)
            self._interruptible = True
            try:
                if self.stop_event.is_set():
                    return
                lease = self.lease(max(wait, 0.1))
            except ApiError as exc:  # e.g. a persistent 500: keep the agent, slow down
                delay = refused.next()
                log.error("lease request failed: %s; next try in %.1fs", exc, delay)
                if self.stop_event.wait(delay):
                    return
                continue
            finally:
                self._interruptible = False
            refused.attempt = 0
            if lease is None:
                continue
            self.process(lease)
            self.jobs_processed += 1
            idle_since = time.monotonic()


def _failure(exc: Exception) -> tuple[str, bool]:
    """What to report for a job that failed with ``exc``, and whether another attempt may
    succeed."""
    if isinstance(exc, TransportError):  # the board dropped off: another attempt may reach it
        return f"device unreachable: {exc}", True
    if isinstance(exc, ArtifactError):
        return str(exc), True
    if isinstance(exc, ApiError):
        return f"artifact download failed: {exc}", True
    if isinstance(exc, RunnerError):
        return str(exc), exc.retryable
    return f"{type(exc).__name__}: {exc}", True  # a runner bug fails the job, not the agent

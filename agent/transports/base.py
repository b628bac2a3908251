"""The Transport protocol: how the agent reaches the device it benchmarks.

A transport moves files and runs shell commands on one device; everything above it (the
probe, the runners that drive the static ``bnnbench-native`` CLI or a library's benchmark
binary) is written once against these few primitives:

- ``run(command, timeout)``: a POSIX shell command line run by the device's own shell
  (``sh -c`` locally, the login shell over ssh, ``adb shell`` on a phone). On expiry the
  command *and its children on the device* are killed and the result says ``timed_out``.
- ``push(local, remote, mode)`` / ``pull(remote, local)``: whole files.
- ``close()``: drop connections (a later call reconnects).

A lost connection (ssh dropped, phone unplugged, adb server restarted) raises
``TransportError``: the job is reported as a retryable failure and leased again.

A run can be stopped from another thread: the agent runs a job's benchmark inside a
``CancelScope`` (``with cancel_scope(scope): ...``); ``scope.cancel(reason)`` (its job was
cancelled, or its lease lost) makes every transport's ``run`` in that scope kill its command
*and its children on the device* at once and raise ``RunCancelled``. Commands outside a scope
(probes, staging) are unaffected.
"""

from __future__ import annotations

import contextlib
import shlex
import threading
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

# how often a transport waiting on a command looks at its scope (remote kills need a round
# trip anyway; a local command is killed from the cancelling thread at once)
CANCEL_POLL_S = 0.2


class TransportError(Exception):
    """The device could not be reached or the connection broke; retrying may succeed."""


class RunCancelled(Exception):
    """The run's scope was cancelled: its command was killed; nothing it produced counts."""


class CancelScope:
    """A stop signal for one run, set from another thread. ``on_cancel`` callbacks run in
    the cancelling thread (a local transport kills its process group there, at once)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []
        self.reason = ""

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def cancel(self, reason: str) -> None:
        with self._lock:
            if self._event.is_set():
                return
            self.reason = reason
            self._event.set()
            callbacks = list(self._callbacks)
        for cb in callbacks:
            with contextlib.suppress(Exception):  # a kill that fails: the poll retries it
                cb()

    def wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` s; True when cancelled meanwhile."""
        return self._event.wait(timeout)

    @contextlib.contextmanager
    def on_cancel(self, callback: Callable[[], None]) -> Iterator[None]:
        """Run ``callback()`` if the scope is cancelled while the block runs (at once if it
        already is)."""
        with self._lock:
            self._callbacks.append(callback)
            already = self._event.is_set()
        try:
            if already:
                with contextlib.suppress(Exception):
                    callback()
            yield
        finally:
            with self._lock:
                self._callbacks.remove(callback)

    def check(self) -> None:
        """Raise ``RunCancelled`` if the scope was cancelled."""
        if self._event.is_set():
            raise RunCancelled(self.reason or "cancelled")


_SCOPE: ContextVar[CancelScope | None] = ContextVar("bnnbench_cancel_scope", default=None)


@contextlib.contextmanager
def cancel_scope(scope: CancelScope) -> Iterator[CancelScope]:
    """Make ``scope`` the current one for the transports called in this thread."""
    token = _SCOPE.set(scope)
    try:
        yield scope
    finally:
        _SCOPE.reset(token)


def current_scope() -> CancelScope | None:
    return _SCOPE.get()


def check_cancelled() -> None:
    """Raise ``RunCancelled`` if the current run was cancelled (a no-op outside a scope)."""
    scope = _SCOPE.get()
    if scope is not None:
        scope.check()


@dataclass
class CommandResult:
    command: str
    exit_code: int  # -1 when killed on timeout or the exit code was never seen
    stdout: str
    stderr: str
    timed_out: bool = False
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    def describe(self) -> str:
        """One line for an error message: what ran and how it ended (stderr's tail)."""
        how = "timed out" if self.timed_out else f"exit code {self.exit_code}"
        tail = (self.stderr or self.stdout).strip()[-600:]
        return f"`{self.command[:200]}` {how}" + (f": {tail}" if tail else "")


@runtime_checkable
class Transport(Protocol):
    name: str  # local | ssh | adb, recorded with every result
    address: str  # local:// | ssh://user@host:port | adb://SERIAL: how the operator named it
    workdir: str  # device-side folder for the CLI, artifacts and outputs

    def run(self, command: str, timeout: float) -> CommandResult:
        """Run a shell command line on the device; kill it (and its children) on timeout."""
        ...

    def push(self, local: Path, remote: str, mode: int = 0o644) -> None:
        """Copy a local file to ``remote`` on the device (parent folders must exist)."""
        ...

    def pull(self, remote: str, local: Path) -> None:
        """Copy a file from the device to ``local``."""
        ...

    def close(self) -> None: ...


def quote(arg: str | Path) -> str:
    """Quote one argument for the device's POSIX shell (toybox/mksh/busybox/bash alike)."""
    return shlex.quote(str(arg))

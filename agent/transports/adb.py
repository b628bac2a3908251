"""An Android phone through the host's ``adb`` client (``adb -s SERIAL shell|push|pull``).

Every call is one ``adb -s SERIAL ...`` subprocess, so the adb server (started on demand by the
client, port from ``ANDROID_ADB_SERVER_PORT``) owns the USB/TCP connection and its keys.

- ``run``: ``adb shell`` with the command wrapped as ``echo PIDMARK$$; sh -c CMD; printf
  RCMARK$?``; both marker lines are stripped again. The status comes from the marker, not from
  adb: with the device's ``shell_v2`` feature (Android 7+) adb separates stderr and passes the
  exit code, but adb 29 also exits 0 when the connection drops mid-command, and a ``shell:``
  v1 device (stdout and stderr merged) passes none; a missing marker raises TransportError.
  On timeout the transport kills the wrapping shell's process tree and process group on the
  device (``kill -STOP`` first so nothing forks away, ``pgrep -P`` for the children, then
  ``kill -9``; adbd makes each shell a session leader), and only then the local adb client:
  the client's exit alone only gets the shell a SIGHUP from adbd, and a benchmark's children
  would keep running. A run whose ``CancelScope`` is cancelled is killed the same way and
  raises ``RunCancelled``.
- ``push``: ``adb push`` to ``REMOTE.part``, then ``chmod`` and ``mv`` on the device, so a
  half-copied file is never seen under its name. ``pull``: ``adb pull`` into ``LOCAL.part``,
  then rename.
- A network serial (``HOST:PORT``) is ``adb connect``-ed first (again when adb has forgotten
  it, e.g. after a server restart); a device that is gone (not found, offline, unauthorized,
  connection closed, no adb server) raises :class:`TransportError`.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from agent.transports.base import (
    CANCEL_POLL_S,
    CommandResult,
    RunCancelled,
    TransportError,
    current_scope,
    quote,
)

DEFAULT_WORKDIR = "/data/local/tmp/bnnbench"
ADMIN_TIMEOUT_S = 30.0  # connect, features, get-state, kill: quick unless the device is gone
TRANSFER_TIMEOUT_S = 900.0  # push/pull of a model or binary over USB 2 or Wi-Fi
CONNECT_WAIT_S = 10.0  # after `adb connect`, how long the device may stay offline/connecting

_NETWORK_SERIAL = re.compile(r"^(?:\[[0-9a-fA-F:.]+\]|[\w.-]+):\d+$")

# adb's own messages for a device that cannot be used (adb 29 .. 35); a command's stderr
# never starts with them unless it mimics adb
_GONE = re.compile(
    r"^(?:adb: )?(?:error: )?(?:"
    r"device '[^']*' not found|device offline|device not found|no devices/emulators found"
    r"|device unauthorized|device still (?:authorizing|connecting)|closed$|protocol fault"
    r"|failed to get feature set|cannot connect to daemon|more than one device"
    r"|could not connect|failed to connect"
    r")",
    re.MULTILINE,
)


class AdbTransport:
    name = "adb"

    def __init__(
        self,
        serial: str,
        *,
        adb: str = "adb",
        workdir: str = DEFAULT_WORKDIR,
        connect: bool | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """``connect``: ``adb connect`` the serial before use; by default when it is HOST:PORT.
        ``env``: variables added to this process's environment for every adb call (a test's
        ``ANDROID_ADB_SERVER_PORT``, ``HOME``...)."""
        if not serial:
            raise ValueError("an adb serial is required")
        self.serial = serial
        self.adb = adb
        self.workdir = workdir
        self.address = f"adb://{serial}"
        self.connect_first = bool(_NETWORK_SERIAL.match(serial)) if connect is None else connect
        self.env = dict(env or {})
        self._features: frozenset[str] | None = None
        self._connected = False

    @classmethod
    def from_url(cls, url: str, **options: Any) -> AdbTransport:
        """``adb://SERIAL`` (``adb://R58N123ABC``, ``adb://192.168.1.20:5555``); ``options``
        are the constructor's."""
        serial = url.removeprefix("adb://").strip("/")
        if not url.startswith("adb://") or not serial:
            raise ValueError(f"not an adb:// address: {url!r}")
        return cls(serial, **options)

    # ---- the Transport protocol -----------------------------------------------------------------

    def run(self, command: str, timeout: float) -> CommandResult:
        scope = current_scope()
        if scope is not None:
            scope.check()
        for attempt in (1, 2):
            try:
                return self._run_once(command, timeout)
            except _NotStarted as exc:
                # adb forgot a network device (server restarted, Wi-Fi dropped): the command
                # never started, so reconnecting and running it again is safe
                if attempt == 2 or not self.connect_first:
                    raise TransportError(str(exc)) from None
                self._connected = False
        raise AssertionError("unreachable")

    def _run_once(self, command: str, timeout: float) -> CommandResult:
        self.features()  # connects first when needed; shell_v2 only changes what adb opens
        nonce = secrets.token_hex(6)
        pid_mark = f"__bnnbench_pid_{nonce}="
        exit_mark = f"__bnnbench_rc_{nonce}="
        # first line: the pid of the shell adbd started, for the kill on timeout; last line:
        # the command's status (printf's arguments are expanded before it runs, so `$?` is
        # still sh -c's). adb's own exit code is not trusted: adb 29 exits 0 when the
        # connection drops mid-command, and a shell v1 device has none to give.
        remote = (
            f'echo "{pid_mark}$$"\nsh -c {quote(command)}\nprintf \'\\n%s%s\\n\' {exit_mark} "$?"'
        )
        start = time.monotonic()
        scope = current_scope()
        proc, out, err = self._spawn(["shell", remote])
        timed_out = cancelled = False
        deadline = start + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                # in slices while a scope may cancel the run: a cancel is seen within one
                proc.wait(timeout=max(min(remaining, CANCEL_POLL_S) if scope else remaining, 0))
                break
            except subprocess.TimeoutExpired:
                cancelled = scope is not None and scope.cancelled
                if cancelled or time.monotonic() >= deadline:
                    timed_out = True
                    break
        if timed_out:
            pid = _marker_value(out.text(), pid_mark)
            if pid is not None:
                self._kill_remote(pid)  # before the client: its exit only SIGHUPs the shell
            _stop(proc)
        out.join()
        err.join()
        if cancelled:
            assert scope is not None
            raise RunCancelled(f"{self.address}: `{command[:200]}` stopped: {scope.reason}")
        raw_stdout, stderr = out.text(), err.text()
        stdout = _strip_first_line(raw_stdout, pid_mark)
        if not timed_out and pid_mark not in raw_stdout and proc.returncode in (1, 255):
            # adb's own failures exit 1 (255: stream ended without a status) and say why
            said = (stderr or stdout).strip()[-600:]
            if _gone(said):
                self._features = None
                raise _NotStarted(f"{self.address}: {said}")
        stdout, code = _strip_exit_marker(stdout, exit_mark)
        if timed_out:
            exit_code = -1
        elif code is None:
            raise TransportError(
                f"{self.address}: the shell ended without its exit status "
                f"(connection lost?): {(stderr or stdout).strip()[-300:]}"
            )
        else:
            exit_code = code
        return CommandResult(
            command=command,
            exit_code=exit_code,
            stdout=stdout,
            stderr=stderr,
            timed_out=timed_out,
            duration_s=time.monotonic() - start,
        )

    def push(self, local: Path, remote: str, mode: int = 0o644) -> None:
        local = Path(local)
        if not local.is_file():
            raise FileNotFoundError(f"no such local file: {local}")
        part = f"{remote}.part"
        self._transfer(["push", str(local), part], f"push {local} to {remote}")
        res = self.run(
            f"chmod {mode:o} {quote(part)} && mv -f {quote(part)} {quote(remote)}",
            timeout=ADMIN_TIMEOUT_S,
        )
        if not res.ok:
            raise OSError(f"{self.address}: installing {remote} failed: {res.describe()}")

    def pull(self, remote: str, local: Path) -> None:
        local = Path(local)
        part = local.with_name(local.name + ".part")
        try:
            self._transfer(["pull", remote, str(part)], f"pull {remote}")
            os.replace(part, local)
        finally:
            part.unlink(missing_ok=True)

    def close(self) -> None:
        # nothing is held between calls; forget what a reconnect may change
        self._features = None
        self._connected = False

    # ---- adb plumbing ---------------------------------------------------------------------------

    def features(self) -> frozenset[str]:
        """What both this adb and the device support (``adb features``), cached until close()."""
        if self._features is None:
            res = self._call(["features"])
            self._features = frozenset(res.stdout.split())
        return self._features

    def connect(self) -> None:
        """``adb connect`` a network serial and wait until it is online; if it stays offline,
        ``adb disconnect`` and connect once more (adb keeps a stale offline entry of a device
        that went away and answers "already connected" for it)."""
        state = ""
        for attempt in (1, 2):
            res = self._adb(["connect", self.serial], timeout=ADMIN_TIMEOUT_S)
            said = (res.stdout + res.stderr).strip()
            if "connected to" not in said:
                raise TransportError(f"adb connect {self.serial} failed: {said}")
            # a fresh connection may take a moment (handshake, the user allowing the key);
            # a stale entry that is offline now gets a short grace only
            fresh = "already connected" not in said
            state = self._wait_online(CONNECT_WAIT_S if fresh else 1.0)
            if state == "device":
                self._connected = True
                return
            if attempt == 1:
                self._adb(["disconnect", self.serial], timeout=ADMIN_TIMEOUT_S)
        raise TransportError(f"{self.address} is {state or 'not online'} after adb connect")

    def _wait_online(self, wait_s: float) -> str:
        deadline = time.monotonic() + wait_s
        while True:
            res = self._adb(["-s", self.serial, "get-state"], timeout=ADMIN_TIMEOUT_S)
            if res.returncode == 0 and res.stdout.strip() == "device":
                return "device"
            if time.monotonic() > deadline:
                said = (res.stdout + res.stderr).strip()
                return said.removeprefix("error: ") or "not online"
            time.sleep(0.1)

    def _call(
        self, args: Sequence[str], timeout: float = ADMIN_TIMEOUT_S, what: str = ""
    ) -> subprocess.CompletedProcess[str]:
        """``adb -s SERIAL ARGS`` that must succeed; a gone device → TransportError, once
        reconnected first for a network serial."""
        self._ensure_connected()
        res = self._adb(["-s", self.serial, *args], timeout=timeout)
        if res.returncode != 0 and _gone(res.stdout + res.stderr) and self.connect_first:
            self._connected = False
            self._ensure_connected()
            res = self._adb(["-s", self.serial, *args], timeout=timeout)
        if res.returncode != 0:
            # adb push/pull report on stdout, the rest on stderr
            said = (res.stderr + res.stdout).strip()[-600:]
            if _gone(said):
                self._features = None
                raise TransportError(f"{self.address}: {said}")
            if "No such file or directory" in said or "does not exist" in said:
                raise FileNotFoundError(f"{self.address}: {what or args[0]} failed: {said}")
            raise OSError(f"{self.address}: {what or 'adb ' + args[0]} failed: {said}")
        return res

    def _transfer(self, args: Sequence[str], what: str) -> None:
        self._call(args, timeout=TRANSFER_TIMEOUT_S, what=what)

    def _ensure_connected(self) -> None:
        if self.connect_first and not self._connected:
            self.connect()

    def _adb(self, args: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                [self.adb, *args],
                capture_output=True,
                text=True,
                errors="replace",
                stdin=subprocess.DEVNULL,
                timeout=timeout,
                env=self._env(),
            )
        except FileNotFoundError as exc:
            raise TransportError(f"adb client {self.adb!r} not found: {exc}") from exc
        except subprocess.TimeoutExpired as exc:
            raise TransportError(f"`adb {' '.join(args)[:120]}` hung for {timeout:.0f} s") from exc

    def _spawn(self, args: Sequence[str]) -> tuple[subprocess.Popen[bytes], _Reader, _Reader]:
        """``adb -s SERIAL ARGS`` running, with its output collected as it comes (the pid
        marker is needed while the command still runs)."""
        self._ensure_connected()
        try:
            proc = subprocess.Popen(
                [self.adb, "-s", self.serial, *args],
                env=self._env(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        except FileNotFoundError as exc:
            raise TransportError(f"adb client {self.adb!r} not found: {exc}") from exc
        assert proc.stdout is not None and proc.stderr is not None
        return proc, _Reader(proc.stdout), _Reader(proc.stderr)

    def _env(self) -> dict[str, str]:
        return {**os.environ, **self.env}

    def _kill_remote(self, pid: int) -> None:
        script = (
            'k() { kill -STOP "$1" 2>/dev/null; '
            'for c in $(pgrep -P "$1" 2>/dev/null); do k "$c"; done; '
            'kill -9 "$1" 2>/dev/null; }; '
            f"k {pid}; kill -9 -{pid} 2>/dev/null; true"
        )
        with contextlib.suppress(TransportError):  # gone: nothing left to kill there
            self._adb(["-s", self.serial, "shell", script], timeout=ADMIN_TIMEOUT_S)


class _NotStarted(Exception):
    """adb could not start the command: the device is gone (maybe only from adb's list)."""


def _gone(text: str) -> bool:
    return bool(_GONE.search(text.strip()))


class _Reader:
    """Drains one pipe in a thread; ``text()`` is what arrived so far."""

    def __init__(self, pipe: IO[bytes]) -> None:
        self._pipe = pipe
        self._buf = bytearray()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while chunk := self._pipe.read1(65536):  # type: ignore[attr-defined]
            with self._lock:
                self._buf += chunk
        self._pipe.close()

    def text(self) -> str:
        with self._lock:
            return self._buf.decode(errors="replace")

    def join(self, timeout: float = 10.0) -> None:
        self._thread.join(timeout)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def _marker_value(text: str, mark: str) -> int | None:
    m = re.search(re.escape(mark) + r"(\d+)", text)
    return int(m.group(1)) if m else None


def _strip_first_line(text: str, mark: str) -> str:
    if text.startswith(mark):
        _, _, rest = text.partition("\n")
        return rest
    return text


def _strip_exit_marker(text: str, mark: str) -> tuple[str, int | None]:
    """Remove the trailing ``\\n<mark><code>\\n`` (an empty line was echoed before the mark)."""
    m = re.search("\r?\n" + re.escape(mark) + r"(\d+)\r?\n?$", text)  # \r: a v1 pty
    if not m:
        return text, None
    return text[: m.start()], int(m.group(1))

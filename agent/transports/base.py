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
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable


class TransportError(Exception):
    """The device could not be reached or the connection broke; retrying may succeed."""


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

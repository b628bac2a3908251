"""The machine the agent runs on, through the same primitives as a remote board."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from agent.transports.base import CommandResult

DEFAULT_WORKDIR = "var/device-local"


class LocalTransport:
    name = "local"
    address = "local://"

    def __init__(self, workdir: str | Path | None = None) -> None:
        self.workdir = str(Path(workdir or DEFAULT_WORKDIR).resolve())

    def run(self, command: str, timeout: float) -> CommandResult:
        start = time.monotonic()
        # own session: on timeout the whole process group goes, not just the shell
        proc = subprocess.Popen(
            ["/bin/sh", "-c", command],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            out, err = proc.communicate(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid)
            out, err = proc.communicate()
            timed_out = True
        return CommandResult(
            command=command,
            exit_code=-1 if timed_out else proc.returncode,
            stdout=out.decode(errors="replace"),
            stderr=err.decode(errors="replace"),
            timed_out=timed_out,
            duration_s=time.monotonic() - start,
        )

    def push(self, local: Path, remote: str, mode: int = 0o644) -> None:
        tmp = f"{remote}.part"
        shutil.copyfile(local, tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, remote)

    def pull(self, remote: str, local: Path) -> None:
        shutil.copyfile(remote, local)

    def close(self) -> None:
        pass


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)

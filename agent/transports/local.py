"""The machine the agent runs on, through the same primitives as a remote board.

Every command runs under a small guard shell that leads its own process group (session):

- on a timeout, or when the run's ``CancelScope`` is cancelled, the whole group is killed
  (the command and everything it started), not just the shell;
- the guard's stdin is a pipe whose write end only the agent holds. When the agent dies —
  ``kill -9`` included, when no cleanup code runs — the pipe reads end-of-file and a watcher
  in the guard kills the group: no benchmark outlives its agent and skews the next run on the
  machine. (``PR_SET_PDEATHSIG`` would reach only the direct child, and only from the thread
  that started it.)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from agent.transports.base import CommandResult, RunCancelled, current_scope

DEFAULT_WORKDIR = "var/device-local"

# $1 is the command, run by its own `sh -c` exactly as before (stdin /dev/null). fd 3 keeps the
# agent's pipe for the watcher: an asynchronous list's stdin is /dev/null in a shell without
# job control, so the watcher cannot read fd 0 itself. The watcher's output goes nowhere, so
# it never holds the pipes the agent reads to their end.
_GUARD = (
    "exec 3<&0; "
    "( read x <&3; kill -KILL 0 ) </dev/null >/dev/null 2>&1 & w=$!; "
    '/bin/sh -c "$1" </dev/null 3<&-; rc=$?; '
    "kill $w 2>/dev/null; exit $rc"
)


class LocalTransport:
    name = "local"
    address = "local://"

    def __init__(self, workdir: str | Path | None = None) -> None:
        self.workdir = str(Path(workdir or DEFAULT_WORKDIR).resolve())

    def run(self, command: str, timeout: float) -> CommandResult:
        scope = current_scope()
        if scope is not None:
            scope.check()
        start = time.monotonic()
        life_r, life_w = os.pipe()  # the guard's lifeline: EOF when this process is gone
        try:
            proc = subprocess.Popen(
                ["/bin/sh", "-c", _GUARD, "bnnbench-run", command],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                stdin=life_r,
                start_new_session=True,  # own group: a kill takes every process of the run
            )
        except BaseException:
            os.close(life_w)
            raise
        finally:
            os.close(life_r)

        def kill() -> None:
            if proc.returncode is None:  # reaped: its group id may belong to another now
                _kill_group(proc.pid)

        try:
            cancel = scope.on_cancel(kill) if scope is not None else contextlib.nullcontext()
            with cancel:
                try:
                    out, err = proc.communicate(timeout=timeout)
                    timed_out = False
                except subprocess.TimeoutExpired:
                    kill()
                    out, err = proc.communicate()
                    timed_out = True
        finally:
            os.close(life_w)
        if scope is not None and scope.cancelled:
            raise RunCancelled(f"`{command[:200]}` stopped: {scope.reason}")
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
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)

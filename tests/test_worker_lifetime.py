"""Converter workers never outlive their coordinator (issue 14): a SIGKILLed coordinator runs no
shutdown code, so each worker watches its parent itself (coordinator.worker.die_with_parent)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import REPO, CoordinatorProcess, wait_for
from helpers.procs import children, pid_alive

from coordinator.worker import PARENT_ENV


@pytest.mark.slow  # an LCE conversion: TensorFlow in the worker
def test_worker_dies_with_a_sigkilled_coordinator(
    coordinator_factory: Callable[..., CoordinatorProcess], tiny_onnx: Path
) -> None:
    c = coordinator_factory()
    assert c.proc is not None
    server = c.proc.pid
    m = c.client.upload_model(tiny_onnx)
    # an LCE conversion takes seconds (TensorFlow): long enough to kill the server under it
    (job,) = c.client.create_jobs(m.id, "lce", [1])
    (worker,) = wait_for(
        lambda: children(server, "coordinator.worker convert"),
        timeout=30,
        poll=0.02,
        what="the conversion worker",
    )
    (out,) = (c.data_dir / "tmp").glob(f"artifact-{job.artifact_id}-*")
    os.kill(server, signal.SIGKILL)  # only the server: the worker's group is left alone
    c.proc.wait()
    deadline = time.monotonic() + 2.5
    while pid_alive(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(worker), f"converter worker {worker} outlived its killed coordinator"
    assert out.stat().st_size == 0  # it died mid-way: it never finished the conversion


def test_worker_parent_watch_without_pdeathsig() -> None:
    """The portable fallback alone: the watching thread ends the worker once it is orphaned."""
    child = (
        "import time; from coordinator.worker import die_with_parent; "
        "die_with_parent(0.1, pdeathsig=False); time.sleep(60)"
    )
    parent = (
        "import os, subprocess, sys, time; "
        f"env = {{**os.environ, {PARENT_ENV!r}: str(os.getpid())}}; "
        f"p = subprocess.Popen([sys.executable, '-c', {child!r}], env=env); "
        "print(p.pid, flush=True); time.sleep(60)"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, env=env)
    pid = 0
    try:
        assert proc.stdout is not None
        pid = int(proc.stdout.readline())
        assert pid_alive(pid)
        proc.kill()
        proc.wait()
        wait_for(lambda: not pid_alive(pid), timeout=3, poll=0.05, what="the orphan's exit")
    finally:
        proc.kill()
        proc.wait()
        if pid and pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_worker_memory_cap_turns_a_runaway_allocation_into_memory_error() -> None:
    """worker_max_memory_mb caps the worker's address space (RLIMIT_AS): an allocation past
    it raises MemoryError (which the worker reports as "ran out of memory"), not swap."""
    code = (
        "from coordinator.worker import limit_memory\n"
        "limit_memory(512)\n"
        "try:\n    bytearray(2 << 30)\nexcept MemoryError:\n    print('capped')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30
    )
    assert out.stdout.strip() == "capped", out.stdout + out.stderr

"""A benchmark program's command line on a device, built once for every runner that drives one
through a transport (the static ``bnnbench-native`` CLI, LCE's ``lce_benchmark_model``,
daBNN's ``benchmark_single_model``), so pinning, exec wrappers, quoting and timeouts cannot
drift apart between libraries; plus the two questions such a runner asks about its program
on the device (is it there, which build is it), and ``DeviceProgram``, which asks them for a
library's own benchmark binary wherever it lives.

Pinning uses ``taskset MASK`` with a hexadecimal mask rather than ``taskset -c LIST``: the mask
form is the one util-linux, busybox and every toybox release (Android's ``taskset``; ``-c``
appeared only in recent toybox) all accept.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.runners.base import RunnerError
from agent.runners.staging import DeviceFiles
from agent.transports.base import CommandResult, Transport, quote
from agent.transports.local import LocalTransport
from bnnbench.digest import sha256_file
from bnnbench.schemas import DeviceInfo

# slack on top of the time a protocol asks a command to spend: a tool overshoots its marks
# (google-benchmark's sizing loops, a run started just before the deadline, process start)
TIMEOUT_FACTOR = 3.0


def pick_cpus(device: DeviceInfo | None, affinity: str, threads: int) -> list[int] | None:
    """The cores a run is pinned to: ``big`` = the fastest cluster, grown by the next fastest
    until it holds ``threads`` cores; ``all`` = no pinning (None); else a CPU list. Without a
    probed device ``big`` cannot be resolved and means no pinning."""
    if affinity == "all":
        return None
    if affinity == "big":
        cpus: list[int] = []
        for cluster in device.clusters if device else []:  # fastest first
            if len(cpus) >= threads:
                break
            cpus += cluster.cpus
        return sorted(cpus) or None
    from agent.probe import cpu_list

    return cpu_list(affinity) or None


def cpu_mask(cpus: Sequence[int]) -> str:
    """``taskset``'s hexadecimal affinity mask for these CPUs (``[4, 5, 6, 7]`` → ``f0``)."""
    return format(sum(1 << c for c in set(cpus)), "x")


def device_command(
    argv: Sequence[str | Path],
    *,
    cpus: Sequence[int] | None = None,
    exec_wrapper: str | None = None,
    taskset: bool = True,
) -> tuple[str, bool]:
    """``[taskset MASK] [wrapper …] argv…`` quoted for the device's POSIX shell, and whether
    the pinning prefix is in it (``taskset=False``: the device has no ``taskset``).

    The wrapper may carry its own arguments (``qemu-aarch64 -L /usr/aarch64-linux-gnu``), so
    it is split like a shell would; taskset comes first so the wrapper and the program it
    starts both inherit the mask."""
    prefix: list[str] = []
    pinned = bool(cpus) and taskset
    if pinned:
        assert cpus is not None
        prefix = ["taskset", cpu_mask(cpus)]
    if exec_wrapper:
        prefix += shlex.split(exec_wrapper)
    return " ".join(quote(a) for a in [*prefix, *argv]), pinned


def run_timeout(base_s: float, asked_s: float = 0.0) -> float:
    """Seconds one device command may run: the runner's own allowance (loading, a slow model)
    plus a margin over the time the job's protocol asks the command to spend, so a long
    ``min_time_ms`` or ``warmup_ms`` is not killed by a limit sized for the default."""
    return base_s + TIMEOUT_FACTOR * max(asked_s, 0.0)


def has_taskset(transport: Transport, device: DeviceInfo | None) -> bool:
    """Whether the device can pin: from the probe when there is one, else asked once here."""
    if device is not None:
        return "taskset" in device.tools
    return (
        "yes" in transport.run("command -v taskset >/dev/null 2>&1 && echo yes", timeout=60).stdout
    )


def is_executable(transport: Transport, path: str) -> bool:
    """Whether ``path`` is an executable regular file on the device. A lost connection raises
    TransportError (the caller says the device is unreachable, not that the file is absent)."""
    return transport.run(f"test -f {quote(path)} && test -x {quote(path)}", timeout=60).ok


def file_id(transport: Transport, path: str, digits: int = 12) -> str:
    """Which build a program on the device is: ``sha256:<digits hex>`` computed there, or
    ``bytes:<size>@<path>`` on a device without ``sha256sum`` (pulling a large binary back to
    hash it would cost more than it tells)."""
    p = quote(path)
    res = transport.run(
        f"[ -f {p} ] || exit 3; if command -v sha256sum >/dev/null 2>&1; then sha256sum {p}; "
        f"else echo bytes $(wc -c < {p}); fi",
        timeout=300,
    )
    if res.exit_code == 3:
        raise RunnerError(f"{path} is not a file on the device")
    m = re.match(r"\s*([0-9a-fA-F]{64})\b", res.stdout)
    if res.ok and m:
        return f"sha256:{m.group(1).lower()[:digits]}"
    m = re.match(r"\s*bytes\s+(\d+)", res.stdout)
    if res.ok and m:
        return f"bytes:{m.group(1)}@{path}"
    raise RunnerError(f"cannot identify {path} on the device: {res.describe()}")


@dataclass(frozen=True)
class DeviceTarget:
    """Where a runner starts its tool: through ``transport`` on a device (None: on this
    machine, files read where they are), the device's probe (cores and clusters, for pinning),
    the default ``affinity`` of its runs, and an ``exec_wrapper`` its commands start under
    (e.g. ``qemu-aarch64-static`` for an emulated board)."""

    transport: Transport | None = None
    device: DeviceInfo | None = None
    affinity: str = "all"
    exec_wrapper: str | None = None

    @property
    def device_side(self) -> bool:
        return self.transport is not None


class DeviceProgram:
    """A library's benchmark binary (``lce_benchmark_model``, ``benchmark_single_model``) that
    a runner starts through a transport. With a transport it lives on that device, at the path
    devices.toml gives, and models are staged into the device's cache; without one it is on
    this machine (found from the runner settings or PATH) and files are read where they are.
    """

    def __init__(self, path: str, name: str, target: DeviceTarget) -> None:
        self.path = path
        self.name = name  # the tool's name in messages
        self.device_side = target.device_side
        self.transport: Transport = target.transport or LocalTransport()
        self.device = target.device
        self.affinity = target.affinity
        self.exec_wrapper = target.exec_wrapper
        self.files = DeviceFiles(self.transport) if self.device_side else None
        self._seen = False  # the device had the binary once: not asked again per job
        self._taskset: bool | None = None
        self._build: str | None = None

    @staticmethod
    def locate(
        given: str | os.PathLike[str] | None, configured: str, name: str, device_side: bool
    ) -> str:
        """The binary's path: the one given, else on this machine the configured one or
        ``name`` on PATH; "" when there is none. A device's comes only from devices.toml:
        the host's settings and PATH say nothing about it."""
        if given:
            return str(given)
        if device_side:
            return ""
        return configured or shutil.which(name) or ""

    def executable(self) -> bool:
        """Whether the binary is an executable file where it lives (TransportError: the
        device cannot be reached)."""
        if not self.path:
            return False
        if not self.device_side:
            return os.path.isfile(self.path) and os.access(self.path, os.X_OK)
        if not self._seen:
            self._seen = is_executable(self.transport, self.path)
        return self._seen

    def build_id(self, digits: int) -> str:
        """Which build the binary is (neither tool prints a version): its sha256 prefix."""
        if self._build is None:
            self._build = (
                file_id(self.transport, self.path, digits)
                if self.device_side
                else f"sha256:{sha256_file(self.path)[:digits]}"
            )
        return self._build

    def stage(self, artifact: Path, suffix: str) -> str:
        """The artifact's path where the binary runs (pushed once to a device)."""
        return self.files.stage_artifact(artifact, suffix) if self.files else str(artifact)

    def command(
        self, argv: Sequence[str | Path], affinity: str, threads: int
    ) -> tuple[str, bool, list[int] | None]:
        """``device_command`` for this binary: the command, whether it is pinned, and the
        cores it is pinned to."""
        cpus = pick_cpus(self.device, affinity, threads)
        if cpus and self._taskset is None:
            self._taskset = has_taskset(self.transport, self.device)
        command, pinned = device_command(
            argv, cpus=cpus, exec_wrapper=self.exec_wrapper, taskset=bool(self._taskset)
        )
        return command, pinned, cpus

    def run(self, command: str, timeout: float) -> CommandResult:
        """Run it; a run killed at ``timeout`` or one the shell could not start raises (both
        retryable: neither says anything about the model)."""
        res = self.transport.run(command, timeout=timeout)
        if res.timed_out:
            raise RunnerError(
                f"{self.name} ran past {timeout:g} s and was killed: {res.describe()}"
            )
        if res.exit_code in (126, 127):  # a wrapper or loader missing, not the model
            raise RunnerError(f"cannot run {self.path}: {res.describe()}")
        return res


__all__ = [
    "DeviceProgram",
    "DeviceTarget",
    "cpu_mask",
    "device_command",
    "file_id",
    "has_taskset",
    "is_executable",
    "pick_cpus",
    "run_timeout",
]

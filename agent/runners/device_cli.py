"""Runner for a board reached through a transport: the static ``bnnbench-native`` CLI.

A phone has no Python and a Pi may not either, so the agent pushes the static CLI built for
the device's ABI (``make -C native cross``) and the artifact, each once, into the device's
sha256-keyed cache (``runners.staging``), runs the CLI there with the job's protocol, pinned
with ``taskset`` to the chosen cores, and reads the JSON it prints.

Timing happens inside the CLI (monotonic clock around each inference), so neither the
transport nor the exec wrapper's start-up enters the samples.

The agent's own machine runs the same CLI the same way (``in_place=True``: the host build,
files read where they are, nothing staged), so every native measurement of an agent is a child
process with a timeout: a hung run is killed at its deadline and a crash (SIGSEGV in the
engine) is reported with its signal while the agent keeps serving.
"""

from __future__ import annotations

import json
import math
import signal
import tempfile
from pathlib import Path
from typing import Any

from agent.runners.base import RunnerError, RunOutput, RunPlan
from agent.runners.device_command import DeviceTarget, device_command, pick_cpus, run_timeout
from agent.runners.native import check_threads
from agent.runners.staging import DeviceFiles
from agent.transports.base import CommandResult, Transport, TransportError
from bnnbench.digest import sha256_file
from bnnbench.schemas import DeviceInfo

NATIVE_DIR = Path(__file__).resolve().parents[2] / "native"
# the CLI built for each ABI family; x86-64 boards run the host build
_ABI_BUILD = {
    "arm64-v8a": "aarch64",
    "aarch64": "aarch64",
    "arm64": "aarch64",
    "armeabi-v7a": "armv7",
    "armv7l": "armv7",
    "armv7": "armv7",
    "armv8l": "armv7",
}


def cli_for_abi(abi: str, cli_dir: Path | None = None) -> Path:
    """The host-side CLI binary that runs on devices of this ABI."""
    build = cli_dir or NATIVE_DIR / "build"
    sub = _ABI_BUILD.get(abi)
    return build / sub / "bnnbench-native" if sub else build / "bnnbench-native"


def signal_name(exit_code: int) -> str | None:
    """The signal that ended a program, from the exit status a shell or ``Popen`` reports:
    -N (``Popen``: the program itself was killed; -1 is a transport's "never seen") or 128 + N
    (a shell's convention for a child killed by signal N); None when it exited normally."""
    num = -exit_code if exit_code < -1 else exit_code - 128 if exit_code > 128 else 0
    try:
        return signal.Signals(num).name if num > 0 else None
    except ValueError:
        return f"signal {num}"


class DeviceCliRunner:
    """The native library on a device behind a transport (ssh, adb, or local), or on this
    machine in a child process (``in_place``: the host build of the CLI, files read where
    they are).

    ``cli`` overrides the CLI binary's path (by default the build for the device's ABI under
    ``cli_dir``, or the host build for ``in_place``); ``timeout_s`` is the base allowance of
    one run, to which the time the job's protocol asks for is added (``run_timeout``)."""

    name = "native"

    def __init__(
        self,
        target: DeviceTarget,
        *,
        cli_dir: Path | None = None,
        cli: Path | None = None,
        timeout_s: float = 3600.0,
        in_place: bool = False,
    ) -> None:
        if target.transport is None or target.device is None:
            raise ValueError("the static CLI runs on a device: give its transport and probe")
        self.transport: Transport = target.transport
        self.device: DeviceInfo = target.device
        self.affinity = target.affinity
        self.exec_wrapper = target.exec_wrapper
        self.in_place = in_place
        if cli is not None:
            self.cli = Path(cli)
        elif in_place:  # this machine's own build, whatever its ABI
            self.cli = (cli_dir or NATIVE_DIR / "build") / "bnnbench-native"
        else:
            self.cli = cli_for_abi(self.device.abi or self.device.arch, cli_dir)
        self.timeout_s = timeout_s
        self.unavailable_reason: str | None = None
        self._cli_sha: str | None = None
        self.files = DeviceFiles(self.transport)

    # ------------------------------------------------------------------ Runner protocol

    def available(self) -> bool:
        if not self.cli.is_file():
            self.unavailable_reason = (
                f"no bnnbench-native CLI at {self.cli} (build it with `make -C native`)"
                if self.in_place
                else f"no CLI for ABI {self.device.abi or self.device.arch} at {self.cli} "
                "(build it with `make -C native cross`)"
            )
            return False
        if self.in_place:
            try:
                self.version()
            except Exception as exc:  # the engine's version cannot be read: not usable here
                self.unavailable_reason = f"{type(exc).__name__}: {exc}"
                return False
        self.unavailable_reason = None
        return True

    def version(self) -> str:
        if self.in_place:
            # the host CLI is built from the same sources as libbnn.so in the same make: the
            # engine's version, as the in-process runner and `bnnbench run` report it
            from native import engine  # deferred: loading may build libbnn.so

            return engine.version()
        if self._cli_sha is None:
            self._cli_sha = sha256_file(self.cli)
        return f"bnnbench-native {self.cli.parent.name} static sha256:{self._cli_sha[:12]}"

    def benchmark(self, artifact_path: Path, plan: RunPlan) -> RunOutput:
        """Stage the CLI and the model, run the CLI with the protocol's flags (the same rules
        as the in-process runner), pinned to the chosen cores, and read its JSON report."""
        check_threads(plan.threads)
        if self.in_place:
            with tempfile.TemporaryDirectory(prefix="bnnbench-run-") as tmp:
                return self._benchmark(str(self.cli), str(artifact_path), plan, Path(tmp))
        cli = self.files.stage(self.cli, f"bin/bnnbench-native-{self.version()[-12:]}", 0o755)
        model = self.files.stage_artifact(artifact_path, ".bnn")
        return self._benchmark(cli, model, plan, None)

    def _benchmark(self, cli: str, model: str, plan: RunPlan, out_dir: Path | None) -> RunOutput:
        """Run the CLI at ``cli`` on ``model`` (paths where it runs); ``out_dir``: a folder on
        this machine where the CLI writes the model's output, checked for finite values."""
        p = plan.protocol
        cpus = pick_cpus(self.device, p.affinity or self.affinity, plan.threads)
        argv = [
            cli,
            model,
            "--threads",
            str(plan.threads),
            "--warmup",
            str(plan.warmup),
            "--runs",
            str(plan.runs),
            "--json",
        ]
        if p.warmup_ms:
            argv += ["--warmup-ms", str(math.ceil(p.warmup_ms))]
        if p.min_time_ms:
            argv += ["--min-time-ms", str(math.ceil(p.min_time_ms))]
            argv += ["--max-runs", str(plan.run_cap)]
        output = out_dir / "output.f32" if out_dir is not None else None
        if output is not None:
            argv += ["--output", str(output)]
        command, pinned = device_command(
            argv, cpus=cpus, exec_wrapper=self.exec_wrapper, taskset="taskset" in self.device.tools
        )
        timeout = run_timeout(self.timeout_s, (p.warmup_ms + p.min_time_ms) / 1000)
        res = self.transport.run(command, timeout=timeout)
        report = self._parse(res, timeout)
        samples = [float(x) for x in report.get("samples_ms", [])]
        if not samples:
            raise RunnerError(f"the CLI reported no samples: {res.describe()}")
        extra: dict[str, Any] = {}
        if output is not None:
            extra["output_finite"] = _finite(output)
        version = str(report.get("version", "?"))
        return RunOutput(
            samples_ms=samples,
            runtime_version=version
            if self.in_place
            else f"bnnbench-native {version} ({self.cli.parent.name} static)",
            extra=extra
            | {
                "kernel_isa": report.get("isa"),
                "input_shape": report.get("input_shape"),
                "output_shape": report.get("output_shape"),
                "warmup_runs": report.get("warmup_runs", plan.warmup),
                "warmup_ms": report.get("warmup_ms"),
                "timed_ms": report.get("timed_ms"),
                "command": command,
                "affinity": p.affinity or self.affinity,
                "affinity_cpus": cpus,
                "pinned": pinned,
                "exec_wrapper": self.exec_wrapper,
                "timer": "CLI monotonic clock, inference only",
                "input": "the CLI's fixed-seed uniform [-1, 1) input",
                "process": "child process" if self.in_place else "on the device",
                "protocol_applied": p.model_dump(exclude={"cooldown_s"}),
            },
        )

    # ------------------------------------------------------------------ helpers

    def _parse(self, res: CommandResult, timeout: float) -> dict[str, Any]:
        where = "on this machine" if self.in_place else "on the device"
        if res.timed_out:
            raise RunnerError(
                f"bnnbench-native did not finish within {timeout:g} s {where} and was killed "
                f"(retried): {res.describe()}"
            )
        sig = signal_name(res.exit_code)
        if sig is not None:  # a crash says nothing final about the model: retried
            raise RunnerError(f"bnnbench-native was killed by {sig} {where}: {res.describe()}")
        if res.exit_code != 0:
            # exit 2: the CLI refused the arguments; 1: it refused the model
            retry = res.exit_code > 2 or res.exit_code < 0
            raise RunnerError(f"bnnbench-native failed {where}: {res.describe()}", retryable=retry)
        for line in reversed(res.stdout.strip().splitlines()):
            if line.startswith("{"):
                try:
                    data = json.loads(line)
                except ValueError:
                    break
                if isinstance(data, dict):
                    return data
        raise RunnerError(f"no JSON report in the CLI's output: {res.describe()}")


def _finite(path: Path) -> bool | None:
    """Whether the output the CLI wrote holds only finite values (None: it wrote none)."""
    import numpy as np  # only where the agent runs the CLI in place

    try:
        return bool(np.isfinite(np.fromfile(path, dtype="<f4")).all())
    except OSError:
        return None


__all__ = ["DeviceCliRunner", "TransportError", "cli_for_abi", "pick_cpus", "signal_name"]

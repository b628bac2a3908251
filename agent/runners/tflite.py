"""Runner for plain FP32 ``.tflite`` models with tflite-runtime (the FP32 baseline library).

The timing itself is ``runners.tflite_bench`` (standalone: numpy and tflite-runtime only).
Here it runs in-process; on a board behind a transport whose ``python3`` has tflite-runtime,
the script and the model are pushed into the device's cache and run there, pinned like the
other libraries, and its JSON is read back. tflite-runtime applies its default delegate
(XNNPACK) to float models; ``BNNBENCH_TFLITE_USE_XNNPACK=0`` (``RunnerSettings``) runs the
built-in kernels instead. Models with custom ops (LCE's) are refused: they need the ``lce`` runner.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from agent.runners import tflite_bench
from agent.runners.base import RunnerError, RunOutput, RunPlan
from agent.runners.device_command import device_command, pick_cpus, run_timeout
from agent.runners.staging import DeviceFiles
from agent.transports.base import Transport, quote
from bnnbench.digest import sha256_file
from bnnbench.schemas import DeviceInfo
from bnnbench.settings import RunnerSettings

SCRIPT = Path(tflite_bench.__file__)


class TFLiteRunner:
    name = "tflite"

    def __init__(
        self,
        use_xnnpack: bool | None = None,
        *,
        transport: Transport | None = None,
        device: DeviceInfo | None = None,
        affinity: str = "all",
        python: str = "python3",
        timeout_s: float = 3600.0,
        settings: RunnerSettings | None = None,
    ) -> None:
        self.use_xnnpack = (
            (settings or RunnerSettings()).tflite_use_xnnpack
            if use_xnnpack is None
            else use_xnnpack
        )
        self.transport = transport
        self.device = device
        self.affinity = affinity
        self.python = python
        self.timeout_s = timeout_s
        self.unavailable_reason: str | None = None
        self._remote_version: str | None = None

    # ------------------------------------------------------------------ Runner protocol

    def available(self) -> bool:
        if self.transport is None:
            ok = importlib.util.find_spec("tflite_runtime") is not None
            self.unavailable_reason = None if ok else "tflite-runtime is not installed"
            return ok
        try:
            self.version()
        except RunnerError as exc:
            self.unavailable_reason = str(exc)
            return False
        self.unavailable_reason = None
        return True

    def version(self) -> str:
        if self.transport is None:
            return f"tflite-runtime {tflite_bench._version()}"
        if self._remote_version is None:
            res = self.transport.run(
                f"{quote(self.python)} -c 'from importlib import metadata as m; "
                'import tflite_runtime; print(m.version("tflite-runtime"))\'',
                timeout=120,
            )
            if not res.ok:
                raise RunnerError(
                    f"no tflite-runtime for {self.python} on the device: {res.describe()}"
                )
            self._remote_version = f"tflite-runtime {res.stdout.strip()} ({self.python})"
        return self._remote_version

    def benchmark(self, artifact_path: Path, plan: RunPlan) -> RunOutput:
        if self.transport is None:
            report, cpus, command = self._local(artifact_path, plan), None, None
        else:
            report, cpus, command = self._remote(artifact_path, plan)
        samples = [float(s) for s in report.pop("samples_ms")]
        version = report.pop("tflite_runtime", None)
        return RunOutput(
            samples_ms=samples,
            runtime_version=self.version() if self.transport else f"tflite-runtime {version}",
            extra={
                **report,
                "protocol_applied": plan.protocol.model_dump(exclude={"cooldown_s"}),
                "affinity_cpus": cpus,
                "command": command,
            },
        )

    # ------------------------------------------------------------------ where it runs

    def _local(self, path: Path, plan: RunPlan) -> dict[str, Any]:
        threads, warmup, runs, p = plan.threads, plan.warmup, plan.runs, plan.protocol
        if not self.available():
            raise RunnerError(f"tflite runner not available: {self.unavailable_reason}")
        try:
            return tflite_bench.bench(
                str(path),
                threads,
                warmup,
                runs,
                warmup_ms=p.warmup_ms,
                min_time_ms=p.min_time_ms,
                max_runs=p.max_runs,
                use_xnnpack=self.use_xnnpack,
            )
        except tflite_bench.BenchError as exc:
            raise RunnerError(str(exc), retryable=exc.retryable) from exc

    def _remote(self, path: Path, plan: RunPlan) -> tuple[dict[str, Any], list[int] | None, str]:
        threads, warmup, runs, p = plan.threads, plan.warmup, plan.runs, plan.protocol
        assert self.transport is not None
        files = DeviceFiles(self.transport)
        script = files.stage(SCRIPT, f"bin/tflite_bench-{sha256_file(SCRIPT)[:12]}.py")
        model = files.stage_artifact(path, ".tflite")
        argv: list[str | Path] = [
            self.python,
            script,
            model,
            "--threads",
            str(threads),
            "--warmup",
            str(warmup),
            "--runs",
            str(runs),
            "--warmup-ms",
            str(p.warmup_ms),
            "--min-time-ms",
            str(p.min_time_ms),
        ]
        if p.max_runs:
            argv += ["--max-runs", str(p.max_runs)]
        if not self.use_xnnpack:
            argv.append("--no-xnnpack")
        cpus = pick_cpus(self.device, p.affinity or self.affinity, threads)
        taskset = self.device is None or "taskset" in self.device.tools
        command, pinned = device_command(argv, cpus=cpus, taskset=taskset)
        timeout = run_timeout(self.timeout_s, (p.warmup_ms + p.min_time_ms) / 1000)
        res = self.transport.run(command, timeout=timeout)
        if res.timed_out:
            raise RunnerError(f"tflite_bench did not finish within {timeout:.0f} s")
        try:
            report = json.loads(res.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise RunnerError(f"tflite_bench failed on the device: {res.describe()}") from None
        if "error" in report:
            raise RunnerError(report["error"], retryable=bool(report.get("retryable", True)))
        return report, cpus if pinned else None, command

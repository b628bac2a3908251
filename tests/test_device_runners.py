"""LCE's ``lce_benchmark_model`` and daBNN's ``benchmark_single_model`` driven through a
Transport, the way a board runs them: a LocalTransport whose workdir stands for the device,
stand-in executables placed there that replay real recorded tool output (the ARM binaries do
not run here), staging of the artifact into the device's cache, ``taskset`` pinning, an exec
wrapper, the job's measurement protocol, timeouts, and the agent's runner set for a board."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import stat
import sys
from pathlib import Path

import pytest
from helpers.runners import lce_sample_flags

from agent.runners.base import Runner, RunnerError, RunPlan
from agent.runners.dabnn import DabnnRunner
from agent.runners.device_command import DeviceTarget, cpu_mask, device_command, file_id
from agent.runners.lce import LceRunner
from agent.transports.local import LocalTransport
from bnnbench.schemas import CpuCluster, DeviceInfo, MeasurementProtocol

OUTPUTS = Path(__file__).parent / "data" / "benchmark_outputs"
LCE_OUT = OUTPUTS / "tflite_benchmark_model_mi11_yolov5s_fp32_cpu.txt"  # Inference (avg) 249684
DABNN_JSON = Path(__file__).parent / "data" / "dabnn" / "benchmark_single_model_gbench_f090141.json"


class RecordingTransport(LocalTransport):
    """A LocalTransport that remembers what was pushed and run (a board's view of the job)."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.pushed: list[str] = []
        self.commands: list[str] = []

    def run(self, command: str, timeout: float):  # type: ignore[override]
        self.commands.append(command)
        return super().run(command, timeout)

    def push(self, local: Path, remote: str, mode: int = 0o644) -> None:
        self.pushed.append(remote)
        super().push(local, remote, mode)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _executable(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture()
def device_dir(tmp_path: Path) -> Path:
    d = tmp_path / "device"
    d.mkdir()
    return d


@pytest.fixture()
def transport(device_dir: Path) -> RecordingTransport:
    return RecordingTransport(device_dir)


@pytest.fixture()
def fake_taskset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``taskset MASK cmd…`` that logs the mask and runs cmd unpinned (the host's CPUs may
    not be the mask's)."""
    bin_dir = tmp_path / "host-bin"
    log = tmp_path / "taskset.log"
    _executable(bin_dir / "taskset", f'#!/bin/sh\necho "$1" >> "{log}"\nshift\nexec "$@"\n')
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return log


def _lce_stand_in(device_dir: Path, recorded: Path = LCE_OUT, rc: int = 0) -> tuple[str, Path]:
    log = device_dir / "lce_args.log"
    script = _executable(
        device_dir / "bin" / "lce_benchmark_model",
        f'#!/bin/sh\necho "$@" >> "{log}"\ncat "{recorded}"\nexit {rc}\n',
    )
    return str(script), log


def _dabnn_stand_in(device_dir: Path, stdout: str) -> tuple[str, Path]:
    (device_dir / "stdout.txt").write_text(stdout)
    argv_log = device_dir / "argv.json"
    script = _executable(
        device_dir / "bin" / "benchmark_single_model",
        (
            f"#!{sys.executable}\n"
            "import json, pathlib, sys\n"
            f"d = pathlib.Path({str(device_dir)!r})\n"
            "(d / 'argv.json').write_text(json.dumps(sys.argv[1:]))\n"
            "sys.stdout.write((d / 'stdout.txt').read_text())\n"
        ),
    )
    return str(script), argv_log


def _phone(tools: dict[str, str] | None = None) -> DeviceInfo:
    return DeviceInfo(
        hostname="localhost",
        arch="aarch64",
        os="Android 13",
        cpu_model="SM8250",
        cores=8,
        transport="adb",
        abi="arm64-v8a",
        tools=tools or {},
        clusters=[
            CpuCluster(cpus=[7], max_freq_khz=3_100_000),
            CpuCluster(cpus=[4, 5, 6], max_freq_khz=2_400_000),
            CpuCluster(cpus=[0, 1, 2, 3], max_freq_khz=1_800_000),
        ],
    )


@pytest.fixture()
def model(tmp_path: Path) -> Path:
    p = tmp_path / "host-cache" / "model.tflite"
    p.parent.mkdir()
    p.write_bytes(b"TFL3 stand-in model bytes " * 8)
    return p


# ------------------------------------------------------------------ the shared command line


def test_device_command_pins_with_a_mask_and_splits_the_wrapper() -> None:
    assert cpu_mask([4, 5, 6, 7]) == "f0" and cpu_mask([0]) == "1" and cpu_mask([9, 0]) == "201"
    cmd, pinned = device_command(
        ["/d/my tool", "--x=1"], cpus=[4, 5], exec_wrapper="qemu-aarch64 -L /usr/aarch64-linux-gnu"
    )
    assert pinned
    assert shlex.split(cmd) == [
        "taskset",
        "30",
        "qemu-aarch64",
        "-L",
        "/usr/aarch64-linux-gnu",
        "/d/my tool",
        "--x=1",
    ]
    cmd, pinned = device_command(["a"], cpus=[1], taskset=False)  # the device has no taskset
    assert (cmd, pinned) == ("a", False)
    assert device_command(["a"], cpus=None) == ("a", False)


def test_file_id_hashes_on_the_device_or_falls_back_to_the_size(
    transport: RecordingTransport, device_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = device_dir / "tool"
    f.write_bytes(b"x" * 1000)
    assert file_id(transport, str(f), 16) == f"sha256:{_sha(f)[:16]}"
    # a device without sha256sum (old busybox): size and path identify the build
    only_wc = tmp_path / "only-wc"
    only_wc.mkdir()
    (only_wc / "wc").symlink_to(
        next(
            Path(d) / "wc"
            for d in os.environ["PATH"].split(os.pathsep)
            if (Path(d) / "wc").exists()
        )
    )
    monkeypatch.setenv("PATH", str(only_wc))
    assert file_id(transport, str(f)) == f"bytes:1000@{f}"
    with pytest.raises(RunnerError, match="not a file"):
        file_id(transport, str(device_dir / "missing"))


# ------------------------------------------------------------------ LCE


def test_lce_binary_through_a_transport_stages_once_and_parses(
    transport: RecordingTransport, device_dir: Path, model: Path
) -> None:
    binary, log = _lce_stand_in(device_dir)
    r = LceRunner(mode="binary", binary=binary, target=DeviceTarget(transport))
    assert isinstance(r, Runner) and r.available() and r.resolved_mode() == "binary"
    digest = _sha(Path(binary))
    assert r.version() == f"lce_benchmark_model lce_benchmark_model sha256:{digest[:12]}"
    assert any(c.startswith("[ -f ") and "sha256sum" in c for c in transport.commands)

    out = r.benchmark(model, RunPlan(threads=2, warmup=3, runs=4))
    staged = f"{device_dir.resolve()}/artifacts/{_sha(model)}.tflite"
    assert transport.pushed == [staged]
    assert Path(staged).read_bytes() == model.read_bytes()
    assert out.samples_ms == pytest.approx([249.684] * 4)  # its "Inference (avg)"
    calls = log.read_text().splitlines()
    assert len(calls) == 4  # one process per sample
    for call in calls:
        assert {f"--graph={staged}", *lce_sample_flags(threads=2, warmup=3)} <= set(call.split())
    assert out.extra["command"].startswith(shlex.quote(binary) + " ")
    assert out.extra["model_on_device"] == staged
    assert out.extra["affinity_cpus"] is None and out.extra["pinned"] is False
    assert out.extra["first_inference_ms_median"] == pytest.approx(360.262)

    # the device has it now: no second push
    r.benchmark(model, RunPlan(threads=1, warmup=0, runs=1))
    assert transport.pushed == [staged]
    fresh = LceRunner(mode="binary", binary=binary, target=DeviceTarget(transport))
    fresh.benchmark(model, RunPlan(threads=1, warmup=0, runs=1))  # a new agent finds it there too
    assert transport.pushed == [staged]


def test_lce_pinning_wrapper_and_protocol(
    transport: RecordingTransport, device_dir: Path, model: Path, tmp_path: Path, fake_taskset: Path
) -> None:
    binary, log = _lce_stand_in(device_dir)
    wrapper_log = tmp_path / "wrapper.log"
    wrapper = _executable(
        tmp_path / "host-bin" / "fake-qemu",
        f'#!/bin/sh\necho "$1" >> "{wrapper_log}"\nshift\nexec "$@"\n',
    )
    phone = _phone({"taskset": "/system/bin/taskset"})
    on_phone = DeviceTarget(transport, phone, affinity="big", exec_wrapper=f"{wrapper} -L")
    r = LceRunner(mode="binary", binary=binary, target=on_phone)
    out = r.benchmark(model, RunPlan(threads=2, warmup=1, runs=1))
    # big: the fastest cluster (cpu7), grown by the next (4-6) to hold 2 threads
    assert out.extra["affinity_cpus"] == [4, 5, 6, 7] and out.extra["pinned"] is True
    assert out.extra["command"].startswith(f"taskset f0 {wrapper} -L {binary} ")
    assert fake_taskset.read_text().split() == ["f0"]
    assert wrapper_log.read_text().split() == ["-L"]  # the wrapper ran the tool
    assert out.extra["exec_wrapper"] == f"{wrapper} -L"

    # the job's protocol: its affinity wins; warm-up time per process; min time adds samples
    p = MeasurementProtocol(affinity="0-1", warmup_ms=250, min_time_ms=600)
    out = r.benchmark(model, RunPlan(threads=1, warmup=0, runs=1, protocol=p))
    assert out.extra["affinity_cpus"] == [0, 1] and out.extra["command"].startswith("taskset 3 ")
    assert len(out.samples_ms) == 3  # 3 × 249.7 ms ≥ 600 ms
    assert out.extra["protocol_applied"] == {
        "warmup_min_secs": 0.25,
        "min_time_ms": 600,
        "max_runs": 100,
        "processes": 3,
    }
    assert "--warmup_min_secs=0.25" in log.read_text().splitlines()[-1].split()
    capped = r.benchmark(
        model, RunPlan(1, 0, 1, protocol=MeasurementProtocol(min_time_ms=5000, max_runs=2))
    )
    assert len(capped.samples_ms) == 2


def test_lce_device_side_failures(
    transport: RecordingTransport, device_dir: Path, model: Path
) -> None:
    with pytest.raises(ValueError, match="this machine only"):
        LceRunner(mode="python", target=DeviceTarget(transport))
    on_device = DeviceTarget(transport)
    r = LceRunner(mode="auto", target=on_device)  # a board: the host's PATH is not used
    assert not r.available() and "lce_benchmark" in (r.unavailable_reason or "")
    r = LceRunner(mode="binary", binary=str(device_dir / "missing"), target=on_device)
    assert not r.available() and "local://" in (r.unavailable_reason or "")
    # the tool refused the model: not retryable
    binary, _ = _lce_stand_in(
        device_dir, OUTPUTS / "tflite_benchmark_model_mi11_nnapi_failed.txt", rc=1
    )
    with pytest.raises(RunnerError, match="Benchmarking failed") as exc:
        LceRunner(mode="binary", binary=binary, target=DeviceTarget(transport)).benchmark(
            model, RunPlan(1, 0, 1)
        )
    assert not exc.value.retryable
    # the shell could not start it (a wrapper or loader missing on the device): retryable
    no_wrapper = DeviceTarget(transport, exec_wrapper=str(device_dir / "no-such-qemu"))
    r = LceRunner(mode="binary", binary=binary, target=no_wrapper)
    with pytest.raises(RunnerError, match="cannot run") as exc:
        r.benchmark(model, RunPlan(1, 0, 1))
    assert exc.value.retryable


def test_lce_timeout_kills_the_tool(
    transport: RecordingTransport, device_dir: Path, model: Path
) -> None:
    slow = _executable(device_dir / "bin" / "slow", "#!/bin/sh\nsleep 30\n")
    r = LceRunner(mode="binary", binary=str(slow), target=DeviceTarget(transport), timeout_s=0.5)
    with pytest.raises(RunnerError, match="killed"):
        r.benchmark(model, RunPlan(1, 0, 1))


# ------------------------------------------------------------------ daBNN


def test_dabnn_through_a_transport(
    transport: RecordingTransport, device_dir: Path, tmp_path: Path, fake_taskset: Path
) -> None:
    binary, argv_log = _dabnn_stand_in(device_dir, DABNN_JSON.read_text())
    dab = tmp_path / "m.dab"
    dab.write_bytes(b"\x00dab stand-in" * 10)
    phone = _phone({"taskset": "/system/bin/taskset"})
    r = DabnnRunner(binary, target=DeviceTarget(transport, phone, affinity="big"))
    assert isinstance(r, Runner) and r.available()
    digest = _sha(Path(binary))
    assert r.version() == f"dabnn benchmark_single_model sha256:{digest[:16]}"
    out = r.benchmark(dab, RunPlan(threads=1, warmup=2, runs=2))
    staged = f"{device_dir.resolve()}/artifacts/{_sha(dab)}.dab"
    assert transport.pushed == [staged]
    assert json.loads(argv_log.read_text()) == [
        staged,
        "--benchmark_format=json",
        "--benchmark_repetitions=3",
        "--benchmark_report_aggregates_only=false",
    ]
    iters = [
        b for b in json.loads(DABNN_JSON.read_text())["benchmarks"] if b["run_type"] == "iteration"
    ]
    assert out.samples_ms == pytest.approx([b["real_time"] / 1e6 for b in iters[1:]])
    assert out.extra["affinity_cpus"] == [7] and out.extra["pinned"]  # one thread: cpu7
    assert out.extra["command"].startswith("taskset 80 ")
    assert fake_taskset.read_text().split() == ["80"]

    # protocol: 3 s over 2 samples stretches each repetition to 1.5 s; 1 s of warm-up is
    # one discarded repetition of that length
    p = MeasurementProtocol(min_time_ms=3000, warmup_ms=1000, affinity="all")
    out = r.benchmark(dab, RunPlan(threads=1, warmup=0, runs=2, protocol=p))
    assert json.loads(argv_log.read_text())[-1] == "--benchmark_min_time=1.5"
    assert out.extra["protocol_applied"]["discarded_repetitions"] == 1
    assert out.extra["affinity_cpus"] is None and not out.extra["pinned"]
    assert transport.pushed == [staged]


def test_dabnn_device_side_availability_and_wrapper(
    transport: RecordingTransport, device_dir: Path, tmp_path: Path
) -> None:
    on_device = DeviceTarget(transport)
    assert not DabnnRunner(target=on_device).available()  # no path given for the device
    r = DabnnRunner(str(device_dir / "missing"), target=on_device)
    assert not r.available() and "not an executable file on local://" in (
        r.unavailable_reason or ""
    )
    with pytest.raises(RunnerError):
        r.version()
    binary, argv_log = _dabnn_stand_in(device_dir, DABNN_JSON.read_text())
    wrapper_log = tmp_path / "wrapper.log"
    wrapper = _executable(
        tmp_path / "fake-qemu", f'#!/bin/sh\necho ran >> "{wrapper_log}"\nexec "$@"\n'
    )
    dab = tmp_path / "m.dab"
    dab.write_bytes(b"dab")
    out = DabnnRunner(binary, target=DeviceTarget(transport, exec_wrapper=str(wrapper))).benchmark(
        dab, RunPlan(threads=1, warmup=0, runs=3)
    )
    assert len(out.samples_ms) == 3 and wrapper_log.read_text() == "ran\n"
    assert out.extra["command"].startswith(f"{wrapper} {binary} ")


# ------------------------------------------------------------------ the agent on a board


def test_board_agent_gets_library_runners_and_passes_the_protocol(
    transport: RecordingTransport, device_dir: Path, model: Path
) -> None:
    from agent.daemon import Agent
    from agent.fleet import DeviceSpec
    from bnnbench.settings import AgentSettings

    lce, _ = _lce_stand_in(device_dir)
    dab, _ = _dabnn_stand_in(device_dir, DABNN_JSON.read_text())
    agent = Agent.__new__(Agent)  # no coordinator, no probe: only the runner set is under test
    agent.transport = transport
    agent.device = _phone()
    agent.settings = AgentSettings(native_cli_dir=device_dir / "no-cli")
    agent.spec = DeviceSpec(url="ssh://pi@board", lce_benchmark=lce, dabnn_benchmark=dab)
    runners = agent._default_runners()
    assert set(runners) == {"lce", "dabnn"}  # no static CLI built here: the others still serve
    assert isinstance(runners["lce"], LceRunner) and runners["lce"].binary == lce
    assert runners["lce"].affinity == "all" and runners["lce"].transport is transport
    agent.spec = DeviceSpec(url="ssh://pi@board", lce_benchmark=str(device_dir / "missing"))
    assert agent._default_runners() == {}

    # the lease's protocol reaches the runner with its numbers
    lease = type(
        "Lease",
        (),
        {"threads": 1, "warmup": 0, "runs": 1, "protocol": MeasurementProtocol(min_time_ms=5)},
    )()
    plan = RunPlan.of(lease)  # type: ignore[arg-type]
    assert plan == RunPlan(1, 0, 1, MeasurementProtocol(min_time_ms=5))


@pytest.mark.slow  # converts with LCE's converter (TensorFlow)
def test_lce_python_mode_applies_the_protocol_in_process(tmp_path: Path) -> None:
    """The local interpreter keeps running until the protocol's warm-up and timed spans pass."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    from conftest import make_tiny_onnx

    from converters.backends.lce import convert_lce
    from converters.frontend import load_ir

    r = LceRunner(mode="python")
    assert r.available(), r.unavailable_reason  # larq-compute-engine: the dev extra
    tflite = tmp_path / "tiny.tflite"
    convert_lce(load_ir(make_tiny_onnx(tmp_path / "tiny.onnx", "bnn")), tflite, {})
    p = MeasurementProtocol(warmup_ms=20, min_time_ms=30, max_runs=100_000)
    out = r.benchmark(tflite, RunPlan(threads=1, warmup=0, runs=2, protocol=p))
    assert out.extra["warmup_runs"] >= 1
    assert len(out.samples_ms) >= 2 and sum(out.samples_ms) >= 30
    capped = r.benchmark(
        tflite, RunPlan(1, 0, 2, protocol=MeasurementProtocol(min_time_ms=60_000, max_runs=5))
    )
    assert len(capped.samples_ms) == 5

"""Device description, environment readings and the agent's import weight."""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path

from agent.device import collect_device_info, environment, parse_isa_flags
from agent.probe import probe
from agent.transports import LocalTransport

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("fastapi", "sqlalchemy", "onnx", "onnxruntime", "tensorflow", "uvicorn", "starlette")


def test_device_info_describes_this_machine():
    info = collect_device_info()
    assert info.hostname == socket.gethostname()
    assert info.arch == platform.machine()
    assert info.os.startswith(platform.system())
    assert info.cpu_model.strip()
    assert info.cores == os.cpu_count()
    assert info.transport == "local"
    if Path("/proc/cpuinfo").exists():
        text = Path("/proc/cpuinfo").read_text()
        flags_line = next(
            (ln for ln in text.splitlines() if ln.lower().startswith(("flags", "features"))), ""
        )
        present = set(flags_line.split(":", 1)[-1].split())
        for f in ("popcnt", "avx2", "avx512f", "avx512_vpopcntdq", "asimd"):
            assert (f in info.isa_flags) == (f in present), f
    # the identity is stable across probes and never the hostname where a machine-id exists
    assert info.fingerprint() == probe(LocalTransport()).fingerprint()
    if Path("/etc/machine-id").exists():
        assert info.identity_source == "machine-id"
        assert info.hostname not in info.fingerprint()


def test_isa_flags_from_arm_cpuinfo():
    # aarch64 kernels list asimd only; NEON is implied there, not on x86
    aarch64 = "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimddp"
    assert parse_isa_flags(aarch64, "aarch64") == ["neon", "asimd", "asimddp", "asimdhp"]
    armv7 = "half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt vfpd32 lpae evtstrm"
    assert parse_isa_flags(armv7, "armv7l") == ["neon", "vfpv4"]
    x86 = "fpu sse4_2 popcnt avx avx2 avx512f avx512bw avx512_vpopcntdq"
    assert parse_isa_flags(x86, "x86_64") == [
        "popcnt",
        "sse4_2",
        "avx",
        "avx2",
        "avx512f",
        "avx512bw",
        "avx512_vpopcntdq",
    ]


def test_environment_readings():
    env = environment()
    assert env["python"] == platform.python_version()
    json.dumps(env)  # travels inside ResultIn.env
    if hasattr(os, "sched_getaffinity"):
        assert env["affinity"] == sorted(os.sched_getaffinity(0))
    assert len(env["loadavg"]) == 3
    gov = Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    assert ("governor" in env) == gov.exists()
    zones = [z for z in Path("/sys/class/thermal").glob("thermal_zone*") if (z / "temp").exists()]
    if not zones:
        assert "temperatures_c" not in env


def test_agent_imports_stay_light():
    """Importing the agent and running `bnnbench agent --help` loads no server/converter stack."""
    code = f"""
import json, sys
import agent, agent.cli, agent.daemon, agent.cache, agent.device, bnnbench.client
import agent.runners, agent.runners.native, agent.transports, agent.transports.local
from typer.testing import CliRunner
from bnnbench.cli import app
res = CliRunner().invoke(app, ["agent", "--help"])
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})
print(json.dumps({{"code": res.exit_code, "out": res.output, "heavy": heavy}}))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["code"] == 0, report["out"]
    assert "--coordinator" in report["out"] and "--cache-dir" in report["out"]
    assert report["heavy"] == []


def test_bnnbench_agent_help_console_script():
    exe = Path(sys.executable).with_name("bnnbench")
    out = subprocess.run([str(exe), "agent", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for opt in ("--token", "--once", "--max-jobs", "--exit-when-idle"):
        assert opt in out.stdout

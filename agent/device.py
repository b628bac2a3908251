"""What this machine is (DeviceInfo) and the conditions it measured under (environment).

Everything is read from /proc, /sys and ``sysctl`` without extra dependencies; a reading that
is not available on a platform is simply left out rather than guessed.
"""

from __future__ import annotations

import contextlib
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from bnnbench.schemas import DeviceInfo

# ISA features that decide which BNN kernels (bit packing, popcount, SIMD GEMM) can run.
# Linux spells them in /proc/cpuinfo "flags" (x86) or "Features" (ARM).
RELEVANT_FLAGS = (
    "popcnt",
    "sse4_1",
    "sse4_2",
    "avx",
    "fma",
    "avx2",
    "bmi2",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512dq",
    "avx512_vpopcntdq",
    "avx512_vnni",
    "avx512_bitalg",
    "neon",
    "asimd",
    "asimddp",
    "asimdhp",
    "sve",
    "sve2",
    "vfpv4",
)

# macOS reports features as sysctl booleans; map the ones we care about to Linux spellings.
_MACOS_FEATURES = {
    "hw.optional.neon": "neon",
    "hw.optional.AdvSIMD": "asimd",
    "hw.optional.arm.FEAT_DotProd": "asimddp",
    "hw.optional.arm.FEAT_FP16": "asimdhp",
    "hw.optional.avx2_0": "avx2",
    "hw.optional.avx512f": "avx512f",
    "hw.optional.avx512bw": "avx512bw",
    "hw.optional.popcnt": "popcnt",
}


def _read(path: str | Path) -> str | None:
    try:
        return Path(path).read_text()
    except (OSError, UnicodeDecodeError):
        return None


def _sysctl(name: str) -> str | None:
    try:
        out = subprocess.run(
            ["sysctl", "-n", name], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


def _cpuinfo_fields(text: str) -> dict[str, str]:
    """First occurrence of each "key : value" line (per-core blocks repeat the same keys)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), value.strip())
    return fields


def parse_isa_flags(raw_flags: str, arch: str) -> list[str]:
    have = set(raw_flags.lower().split())
    # AArch64 kernels list "asimd" only; NEON is architecturally guaranteed there.
    if arch in ("aarch64", "arm64") and "asimd" in have:
        have.add("neon")
    return [f for f in RELEVANT_FLAGS if f in have]


def _os_string() -> str:
    system, release = platform.system(), platform.release()
    if system == "Darwin":
        ver = platform.mac_ver()[0]
        return f"macOS {ver} (Darwin {release})" if ver else f"Darwin {release}"
    pretty = None
    for line in (_read("/etc/os-release") or "").splitlines():
        if line.startswith("PRETTY_NAME="):
            pretty = line.split("=", 1)[1].strip().strip('"')
    return f"{system} {release} ({pretty})" if pretty else f"{system} {release}"


def _cpu_model_and_flags(arch: str) -> tuple[str, list[str]]:
    if platform.system() == "Darwin":
        model = _sysctl("machdep.cpu.brand_string") or platform.processor() or arch
        flags = [name for key, name in _MACOS_FEATURES.items() if _sysctl(key) == "1"]
        raw = " ".join(
            _sysctl(k) or "" for k in ("machdep.cpu.features", "machdep.cpu.leaf7_features")
        )
        flags += [f for f in parse_isa_flags(raw.replace(".", "_"), arch) if f not in flags]
        return model, [f for f in RELEVANT_FLAGS if f in flags]
    fields = _cpuinfo_fields(_read("/proc/cpuinfo") or "")
    model = (
        fields.get("model name")
        or fields.get("cpu model")
        or fields.get("hardware")  # older ARM kernels: SoC name
        or _arm_model(fields)
        or platform.processor()
        or arch
    )
    raw_flags = fields.get("flags") or fields.get("features") or ""
    return model, parse_isa_flags(raw_flags, arch)


def _arm_model(fields: dict[str, str]) -> str | None:
    """ARM /proc/cpuinfo has no model name on many boards; the device tree usually does."""
    dt = _read("/proc/device-tree/model") or _read("/sys/firmware/devicetree/base/model")
    if dt:
        return dt.strip("\x00\n ")
    if "cpu part" in fields:
        return f"ARM implementer {fields.get('cpu implementer', '?')} part {fields['cpu part']}"
    return None


def collect_device_info(transport: str = "local") -> DeviceInfo:
    arch = platform.machine() or "unknown"
    model, flags = _cpu_model_and_flags(arch)
    return DeviceInfo(
        hostname=socket.gethostname(),
        arch=arch,
        os=_os_string(),
        cpu_model=model,
        cores=os.cpu_count() or 1,
        isa_flags=flags,
        transport=transport,
    )


# ------------------------------------------------------------------ environment readings


def _governors() -> dict[str, str]:
    out: dict[str, str] = {}
    for p in sorted(Path("/sys/devices/system/cpu").glob("cpu[0-9]*/cpufreq/scaling_governor")):
        value = _read(p)
        if value:
            out[p.parent.parent.name] = value.strip()
    return out


def _cur_freq_khz() -> dict[str, int]:
    out: dict[str, int] = {}
    for p in sorted(Path("/sys/devices/system/cpu").glob("cpu[0-9]*/cpufreq/scaling_cur_freq")):
        value = (_read(p) or "").strip()
        if value.isdigit():
            out[p.parent.parent.name] = int(value)
    return out


def _temperatures() -> dict[str, float]:
    out: dict[str, float] = {}
    for zone in sorted(Path("/sys/class/thermal").glob("thermal_zone*")):
        raw = (_read(zone / "temp") or "").strip()
        try:
            milli = int(raw)
        except ValueError:
            continue
        kind = (_read(zone / "type") or zone.name).strip()
        out[f"{zone.name}:{kind}"] = milli / 1000.0
    return out


def environment() -> dict[str, Any]:
    """Readings attached to every result, so a number can be judged later (throttling,
    powersave governor, a busy machine, pinned CPUs)."""
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": sys.platform,
    }
    governors = _governors()
    if governors:
        distinct = sorted(set(governors.values()))
        env["governor"] = distinct[0] if len(distinct) == 1 else distinct
        env["governors"] = governors
    freqs = _cur_freq_khz()
    if freqs:
        env["cur_freq_khz"] = freqs
    if hasattr(os, "sched_getaffinity"):
        env["affinity"] = sorted(os.sched_getaffinity(0))
    with contextlib.suppress(OSError):  # getloadavg is missing on some platforms
        env["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    temps = _temperatures()
    if temps:
        env["temperatures_c"] = temps
    return env

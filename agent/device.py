"""What this machine is (DeviceInfo) and the conditions it measured under (environment):
the probe of ``agent.probe`` run on this machine, plus the ISA flags that decide which
kernels can run."""

from __future__ import annotations

import os
import platform
import sys
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

# macOS reports features as sysctl booleans (read by the probe script); their Linux spellings
MACOS_FEATURES = {
    "hw.optional.neon": "neon",
    "hw.optional.AdvSIMD": "asimd",
    "hw.optional.arm.FEAT_DotProd": "asimddp",
    "hw.optional.arm.FEAT_FP16": "asimdhp",
    "hw.optional.avx2_0": "avx2",
    "hw.optional.avx512f": "avx512f",
    "hw.optional.avx512bw": "avx512bw",
    "hw.optional.popcnt": "popcnt",
}


def parse_isa_flags(raw_flags: str, arch: str) -> list[str]:
    have = set(raw_flags.lower().split())
    # AArch64 kernels list "asimd" only; NEON is architecturally guaranteed there.
    if arch in ("aarch64", "arm64") and "asimd" in have:
        have.add("neon")
    return [f for f in RELEVANT_FLAGS if f in have]


def collect_device_info(transport: str = "local") -> DeviceInfo:
    """This machine, probed like any board (agent.probe)."""
    from agent.probe import probe
    from agent.transports.local import LocalTransport

    info = probe(LocalTransport())
    return info.model_copy(update={"transport": transport})


def environment() -> dict[str, Any]:
    """Readings attached to every result, so a number can be judged later (throttling,
    powersave governor, a busy machine, pinned CPUs)."""
    from agent.probe import readings
    from agent.transports.local import LocalTransport

    env: dict[str, Any] = {"python": platform.python_version(), "platform": sys.platform}
    env.update(readings(LocalTransport()))
    if hasattr(os, "sched_getaffinity"):
        env["affinity"] = sorted(os.sched_getaffinity(0))
    return env

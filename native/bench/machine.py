"""What the benchmarks need to know about the machine they run on.

- :func:`clock_mhz`: the core clock *measured* by ``build/bnn-clock`` (a chain of dependent
  adds, one per cycle), so "ops per cycle" uses the clock the kernels actually ran at. A VM's
  ``/proc/cpuinfo`` often shows the nominal clock; on this project's 2-core EPYC VM it says
  2445 MHz while the cores run at ~3050 MHz, which would overstate ops/cycle by 25 %.
- :func:`assumed_peak`: the binary-op peak per core and cycle assumed for a kernel set on
  this CPU, with how it is derived (:data:`PEAKS`; :data:`INTEL_PEAKS` where Intel cores
  differ). One binary op = one XNOR or one popcount-accumulate of a bit pair (the usual BNN
  convention: one binary MAC = 2 ops).
- :func:`avx2_sequence_ops_per_ns`: what the AVX2 kernel's instruction sequence alone reaches
  right now, to tell a slow kernel from a slow (shared) core.
"""

from __future__ import annotations

import platform
import re
import subprocess
from pathlib import Path

NATIVE = Path(__file__).resolve().parents[1]

# name: (binary ops/cycle/core, how derived). x86: cores with 4 256-bit vector ALU pipes
# (AMD Zen 3 / Zen 4) and 2 512-bit ones (Intel since Ice Lake; Zen 4 pairs its 256-bit
# pipes); loads are assumed hidden (separate load ports). Intel: INTEL_PEAKS below.
PEAKS: dict[str, tuple[float, str]] = {
    "portable": (
        85,
        "SWAR popcount, which gcc -O3 auto-vectorizes to SSE2: ~12 vector ops per 128 bits "
        "on 4 pipes: ~43 bit pairs/cycle",
    ),
    "popcnt": (171, "xor + popcnt + add = 3 ops per 64-bit word on 4 ALUs: 85 bit pairs/cycle"),
    "avx2": (
        341,
        "per 256 bit pairs with weights and activations split into nibble planes (the XOR "
        "of two nibbles is the nibble of the XOR): 2 vpxor, 2 vpshufb (nibble lookup), "
        "2 vpaddb = 6 ops on 4 pipes (the byte counts are widened by vpsadbw only every few "
        "dozen vectors; the activation split, shared by 16 channels, is not counted): "
        "171 bit pairs/cycle",
    ),
    "avx512": (
        683,
        "per 512 bits: vpxorq + vpopcntq + vpaddq = 3 ops on 2 512-bit pipes: 341 bit pairs/cycle",
    ),
    "neon": (
        171,
        "AArch64 per 128 bits: eor + cnt + uadalp (3 ops) on 2 NEON pipes (Cortex-A76): "
        "85 bit pairs/cycle",
    ),
}


# Intel cores (Golden Cove / Raptor Cove, e.g. Sapphire and Emerald Rapids) have 3 256-bit
# vector ALU ports, not 4, and vpshufb runs on 2 of them; their 512-bit pipes are the same 2.
INTEL_PEAKS: dict[str, tuple[float, str]] = {
    "avx2": (
        256,
        "as on AMD (6 ops per 256 bit pairs with nibble planes) but on Intel's 3 256-bit "
        "vector ALU ports: 128 bit pairs/cycle",
    ),
}


def assumed_peak(isa: str) -> tuple[float, str]:
    """(binary ops/cycle/core, how derived) assumed for kernel set ``isa`` on this CPU."""
    if "intel" in cpu_model().lower() and isa in INTEL_PEAKS:
        return INTEL_PEAKS[isa]
    return PEAKS.get(isa, (float("nan"), "?"))


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def clock_mhz(trials: int = 9) -> float:
    """Median measured core clock in MHz (builds ``build/bnn-clock`` when missing)."""
    exe = NATIVE / "build" / "bnn-clock"
    if not exe.exists():
        subprocess.run(
            ["make", "-C", str(NATIVE), "build/bnn-clock"], check=True, capture_output=True
        )
    out = subprocess.run([str(exe), str(trials)], check=True, capture_output=True, text=True)
    return float(out.stdout.strip())


def avx2_sequence_ops_per_ns(rounds: int = 21) -> tuple[float, float] | None:
    """Binary ops/ns of the AVX2 kernel's inner sequence alone on L1 data (median, best of
    ``rounds``; ``build/bnn-peak-avx2``, bench/peak_avx2.c), or None off x86-64 or without
    AVX2. Divided by the clock it is the ceiling the machine allows right now: a shared core
    (a busy SMT sibling) lowers it well below the assumed peak."""
    if platform.machine() not in ("x86_64", "AMD64") or "avx2" not in _cpu_flags():
        return None
    exe = NATIVE / "build" / "bnn-peak-avx2"
    if not exe.exists():
        subprocess.run(
            ["make", "-C", str(NATIVE), "build/bnn-peak-avx2"], check=True, capture_output=True
        )
    out = subprocess.run([str(exe), str(rounds)], check=True, capture_output=True, text=True)
    m = re.search(r"nibble planes (\d+) \((\d+)\)", out.stdout)
    return (float(m.group(1)), float(m.group(2))) if m else None


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()

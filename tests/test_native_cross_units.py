"""The NEON kernels' C unit tests (native/tests/test_kernels.c) under qemu-user: every kernel
set against the reference of its rounding family. A file of its own so that pytest-xdist
(--dist loadfile) runs it beside the zoo runs of tests/test_native_cross.py."""

from __future__ import annotations

import subprocess

import pytest
from test_native_cross import BUILD, QEMU, cross_build

pytestmark = pytest.mark.cross
__all__ = ["cross_build"]  # the fixture, used by name below

# (arch, unit-test binary, qemu -cpu or None, the NEON SGEMM's rounding): ARMv7 as qemu's
# default CPU (VFPv4: the VFMA kernels) and as a Cortex-A8 (NEON without VFPv4: VMLA).
UNIT_CASES = [
    ("aarch64", "test_kernels", None, "fma"),
    ("aarch64", "test_kernels_fold", None, "fma"),
    ("armv7", "test_kernels", None, "fma"),
    ("armv7", "test_kernels", "cortex-a8", "mul+add"),
    ("armv7", "test_kernels_fold", None, "fma"),
]


@pytest.mark.parametrize(
    ("arch", "variant", "cpu", "rounding"),
    UNIT_CASES,
    ids=[f"{a}-{v}-{c or 'default'}" for a, v, c, _ in UNIT_CASES],
)
def test_cross_unit_tests(
    cross_build, arch: str, variant: str, cpu: str | None, rounding: str
) -> None:
    proc = subprocess.run(
        [QEMU[arch], *(["-cpu", cpu] if cpu else []), str(BUILD / arch / variant)],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "default kernels: neon" in out, out
    assert "[neon] ok" in out and "[portable] ok" in out, out
    assert " 0 failures" in out, out
    # the SGEMM micro-kernels matched the reference of the rounding this CPU's table uses
    assert f"[neon] sgemm {6 if arch == 'aarch64' else 4}x16 packed+direct" in out, out
    assert f"rounding {rounding}\n" in out.split("[neon] sgemm", 1)[1], out
    assert "[portable] sgemm 4x16 packed+direct: 28 cases, rounding mul+add" in out, out
    assert "[neon] max pool: 630 cases" in out, out

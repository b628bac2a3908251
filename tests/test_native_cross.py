"""ARM cross builds of the native engine, run under qemu-user.

``make -C native cross-deps cross`` builds static AArch64 and ARMv7 (hard-float) CLIs with
Debian's cross compilers, installing them and qemu-user via apt-get when missing. Then:

- the C unit tests, cross-built, run under qemu: every binary-conv case of the grid against
  the reference, for the portable and the NEON kernel sets (plus a build whose NEON u16->u32
  fold runs every 3 chunks, so the fold path is covered too);
- zoo models run under qemu with a fixed input: the NEON output must be bit-identical to
  the portable path of the same binary (``BNNBENCH_ISA=portable``), and close to the host
  engine and to onnxruntime (float tolerance; with identical binarized inputs the binary
  parts are exact, the FP32 stem/head may round differently). onnxruntime is compared on
  VGG-Small and the FP32 models only: in a deep binarized ResNet with random weights its
  own summation order can flip a sign and diverge legitimately.

Emulated run times mean nothing for ARM hardware and are never reported. The ResNet FP32
models (about 40 s / 80 s per run under qemu, and no binary conv to compare) only run with
BNNBENCH_CROSS_FULL=1.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.cross

ROOT = Path(__file__).resolve().parents[1]
NATIVE = ROOT / "native"
BUILD = NATIVE / "build"
QEMU = {"aarch64": "qemu-aarch64", "armv7": "qemu-arm"}
FULL = os.environ.get("BNNBENCH_CROSS_FULL") == "1"

# (arch, model): every binarized zoo model on AArch64, a subset on ARMv7.
ZOO_AARCH64 = [
    "vggsmall_bnn",
    "vggsmall_react",
    "vggsmall_fp32",
    "resnet18_bnn",
    "resnet18_react",
    "resnet34_bnn",
    "resnet34_react",
] + (["resnet18_fp32", "resnet34_fp32"] if FULL else [])
ZOO_ARMV7 = ["vggsmall_bnn", "vggsmall_react", "resnet18_react"] + (
    ["resnet18_bnn", "resnet34_bnn", "resnet34_react"] if FULL else []
)
CASES = [("aarch64", m) for m in ZOO_AARCH64] + [("armv7", m) for m in ZOO_ARMV7]


def _make(*targets: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "-C", str(NATIVE), "-j2", *targets],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def cross_build() -> None:
    deps = _make("cross-deps")
    if deps.returncode != 0:
        pytest.fail(f"make cross-deps failed:\n{deps.stdout}\n{deps.stderr}")
    proc = _make(
        "cross",
        "build/aarch64/test_kernels",
        "build/aarch64/test_kernels_fold",
        "build/armv7/test_kernels",
        "build/armv7/test_kernels_fold",
    )
    assert proc.returncode == 0, f"cross build failed:\n{proc.stdout}\n{proc.stderr}"
    size = (BUILD / "aarch64" / "bnnbench-native").stat().st_size
    assert size < 1 << 20, f"aarch64 CLI is {size} bytes (limit 1 MiB)"


@pytest.mark.parametrize("arch", ["aarch64", "armv7"])
@pytest.mark.parametrize("variant", ["test_kernels", "test_kernels_fold"])
def test_cross_unit_tests(cross_build, arch: str, variant: str) -> None:
    proc = subprocess.run(
        [QEMU[arch], str(BUILD / arch / variant)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "default kernels: neon" in out, out
    assert "[neon] ok" in out and "[portable] ok" in out, out
    assert " 0 failures" in out, out


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> Path:
    from converters.api import convert
    from converters.zoo import write_zoo

    d = tmp_path_factory.mktemp("zoo_cross")
    write_zoo(d)
    names = {m for _, m in CASES}
    for onnx_path in sorted(d.glob("*.onnx")):
        if onnx_path.stem in names:
            convert(onnx_path, "native", d / f"{onnx_path.stem}.bnn", verify=False)
    return d


def _input(d: Path, model: str) -> tuple[Path, np.ndarray]:
    shape = (1, 3, 32, 32) if model.startswith("vggsmall") else (1, 3, 224, 224)
    path = d / f"input_{shape[-1]}.f32"
    x = np.random.default_rng(1234).uniform(-1, 1, shape).astype("<f4")
    if not path.exists():
        x.tofile(path)
    return path, x


def _run_cli(
    arch: str, model: Path, inp: Path, out: Path, isa: str | None, cpu: str | None = None
) -> dict:
    """One inference of ``model`` by the static CLI under qemu (emulating ``cpu`` if given);
    the CLI's JSON report."""
    env = dict(os.environ)
    env.pop("BNNBENCH_ISA", None)
    if isa:
        env["BNNBENCH_ISA"] = isa
    proc = subprocess.run(
        [
            QEMU[arch],
            *(["-cpu", cpu] if cpu else []),
            str(BUILD / arch / "bnnbench-native"),
            str(model),
            "--threads",
            "1",
            "--warmup",
            "0",
            "--runs",
            "1",
            "--input",
            str(inp),
            "--output",
            str(out),
            "--json",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _close(y: np.ndarray, ref: np.ndarray, what: str, rtol: float) -> None:
    err = float(np.abs(y - ref).max())
    scale = max(1.0, float(np.abs(ref).max()))
    assert err <= rtol * scale, f"{what}: max abs err {err:.3g} (ref max {scale:.3g})"


@pytest.mark.parametrize(("arch", "model"), CASES, ids=[f"{a}-{m}" for a, m in CASES])
def test_zoo_under_qemu(cross_build, zoo: Path, arch: str, model: str) -> None:
    from native.engine import NativeEngine

    bnn = zoo / f"{model}.bnn"
    inp, x = _input(zoo, model)
    neon_out, port_out = zoo / f"{model}.{arch}.neon.f32", zoo / f"{model}.{arch}.port.f32"
    info = _run_cli(arch, bnn, inp, neon_out, None)
    assert info["isa"] == "neon"
    y = np.fromfile(neon_out, dtype="<f4")
    if "fp32" not in model:  # an FP32 model has no binary conv: both paths are the same code
        info = _run_cli(arch, bnn, inp, port_out, "portable")
        assert info["isa"] == "portable"
        assert neon_out.read_bytes() == port_out.read_bytes(), "NEON != portable (bit-exact)"

    # the host's portable kernels: its AVX2 SGEMM uses FMA, which rounds the FP32 stem
    # differently from the ARM build's mul+add, and in a deep binary net a last-bit change
    # can flip a sign near a threshold (the same reason onnxruntime is skipped below)
    with NativeEngine(str(bnn), threads=1, isa="portable") as eng:
        host = eng.run(x).reshape(-1)
    _close(y, host, f"{arch} vs host engine", 1e-4)

    if model.startswith("resnet") and "fp32" not in model:
        # 20+ binarized layers with random weights: onnxruntime's float summation order can
        # flip a sign near a threshold and the outputs diverge legitimately; the host engine
        # (checked above, and against onnxruntime by the converter tests) is the reference.
        return
    import onnxruntime as ort

    sess = ort.InferenceSession(str(zoo / f"{model}.onnx"), providers=["CPUExecutionProvider"])
    ref = sess.run(None, {sess.get_inputs()[0].name: x})[0].reshape(-1)
    _close(y, ref, f"{arch} vs onnxruntime", 1e-3)


def test_armv7_without_neon_uses_portable(cross_build, zoo: Path) -> None:
    """Run-time dispatch: on a VFPv3-only ARMv7 CPU (qemu's cortex-r5f, no HWCAP_NEON) the
    same binary picks the portable kernels and gives the same bytes as on a NEON CPU."""
    inp, _ = _input(zoo, "vggsmall_bnn")
    outs = {}
    for cpu in ("cortex-r5f", "cortex-a7"):
        out = zoo / f"vggsmall_bnn.armv7.{cpu}.f32"
        report = _run_cli("armv7", zoo / "vggsmall_bnn.bnn", inp, out, None, cpu)
        outs[cpu] = (report["isa"], out.read_bytes())
    assert outs["cortex-r5f"][0] == "portable" and outs["cortex-a7"][0] == "neon"
    assert outs["cortex-r5f"][1] == outs["cortex-a7"][1]
    # Asking for NEON where there is none is an error, never a silent fallback.
    proc = subprocess.run(
        [
            QEMU["armv7"],
            "-cpu",
            "cortex-r5f",
            str(BUILD / "armv7" / "bnnbench-native"),
            str(zoo / "vggsmall_bnn.bnn"),
            "--isa",
            "neon",
            "--runs",
            "1",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr

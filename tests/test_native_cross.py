"""ARM cross builds of the native engine, run under qemu-user.

``make -C native cross-deps cross`` builds static AArch64 and ARMv7 (hard-float) CLIs with
Debian's cross compilers, installing them and qemu-user via apt-get when missing. Then:

- the C unit tests, cross-built, run under qemu: every binary-conv case of the grid against
  the reference, the SGEMM micro-kernels against the contract bit for bit (FMA rounding on
  AArch64 and on a VFPv4 ARMv7, mul+add on a Cortex-A8) and the max pool against portable,
  for the portable and the NEON kernel sets (plus a build whose NEON u16->u32 fold runs
  every 3 chunks, so the fold path is covered too);
- every zoo model (FP32 ones included) runs under qemu with a fixed input, NEON and portable:
  each output must equal, byte for byte, the host engine's output of the kernel set that
  rounds alike (ARM portable and the ARMv7 VMLA SGEMM: host ``portable``; the AArch64 FMLA
  and ARMv7 VFMA SGEMMs: host ``avx2``, one FMA chain per output in the same k order), so
  every layer is checked exactly, binary and FP32; NEON against portable of FP32 models and
  against onnxruntime within float tolerance. onnxruntime is compared on VGG-Small and the
  FP32 models only: in a deep binarized ResNet with random weights its own summation order
  can flip a sign and diverge legitimately.

Emulated run times mean nothing for ARM hardware and are never reported. The default set
keeps the file at a few minutes; BNNBENCH_CROSS_FULL=1 runs every zoo model on both
architectures (the FP32 ResNets take minutes per run under qemu).
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

# Zoo models per architecture. With BNNBENCH_CROSS_FULL=1 every zoo model (the ResNet FP32
# ones too: the NEON SGEMM runs their every conv) on both architectures, and more on the
# emulated Cortex-A8 (NEON without VFPv4: the VMLA SGEMM); by default the ones that keep the
# file at a few minutes on 2 cores (an FP32 ResNet takes minutes per run under qemu).
_ALL = [f"{a}_{b}" for a in ("vggsmall", "resnet18", "resnet34") for b in ("bnn", "react", "fp32")]
_VGG = ["vggsmall_bnn", "vggsmall_react", "vggsmall_fp32"]
# The default keeps one whole FP32 network (AArch64); the ARMv7 SGEMMs run in every model's
# FP32 stem, and their every path is compared bit for bit by test_kernels under qemu.
_BIN = ["vggsmall_bnn", "vggsmall_react"]
ZOO_AARCH64 = _ALL if FULL else [*_VGG, "resnet18_bnn", "resnet18_react", "resnet34_bnn"]
ZOO_ARMV7 = _ALL if FULL else [*_BIN, "resnet18_react"]
ZOO_A8 = ["vggsmall_bnn"] + (["vggsmall_fp32", "resnet18_bnn", "resnet18_fp32"] if FULL else [])
# (arch, model, qemu -cpu or None)
CASES: list[tuple[str, str, str | None]] = [("aarch64", m, None) for m in ZOO_AARCH64]
CASES += [("armv7", m, None) for m in ZOO_ARMV7]
CASES += [("armv7", m, "cortex-a8") for m in ZOO_A8]


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


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> Path:
    from converters.api import convert
    from converters.zoo import write_zoo

    d = tmp_path_factory.mktemp("zoo_cross")
    write_zoo(d)
    names = {m for _, m, _ in CASES}
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


def _host_engine(bnn: Path, x: np.ndarray, isa: str) -> np.ndarray:
    from native.engine import NativeEngine

    with NativeEngine(str(bnn), threads=1, isa=isa) as eng:
        assert eng.isa == isa
        return eng.run(x).reshape(-1)


def _host_fma_isa() -> str | None:
    """A host kernel set whose SGEMM rounds like the ARM FMA kernels (one FMA chain per
    output, same k order), or None."""
    from native import engine as E

    return next((i for i in ("avx2", "avx512") if E.isa_supported(i)), None)


@pytest.mark.parametrize(
    ("arch", "model", "cpu"), CASES, ids=[f"{a}-{m}{'-' + c if c else ''}" for a, m, c in CASES]
)
def test_zoo_under_qemu(cross_build, zoo: Path, arch: str, model: str, cpu: str | None) -> None:
    """NEON and portable outputs of one zoo model under qemu against the host engine's, bit
    for bit, each against the host set of its float family: ARM portable (and the ARMv7
    VMLA SGEMM, which rounds alike) against host ``portable``; the AArch64 FMLA and ARMv7
    VFMA SGEMMs against host ``avx2`` (same FMA chain per output). Equal bytes mean every
    layer matched, FP32 convs included, with no tolerance for a sign flip to hide behind.
    Then NEON against onnxruntime where a float tolerance is meaningful."""
    bnn = zoo / f"{model}.bnn"
    inp, x = _input(zoo, model)
    tag = f"{model}.{arch}.{cpu or 'default'}"
    neon_out, port_out = zoo / f"{tag}.neon.f32", zoo / f"{tag}.port.f32"
    info = _run_cli(arch, bnn, inp, neon_out, None, cpu)
    assert info["isa"] == "neon"
    info = _run_cli(arch, bnn, inp, port_out, "portable", cpu)
    assert info["isa"] == "portable"
    y = np.fromfile(neon_out, dtype="<f4")
    y_port = np.fromfile(port_out, dtype="<f4")

    host_port = _host_engine(bnn, x, "portable")
    np.testing.assert_array_equal(y_port, host_port, err_msg=f"{arch} portable != host portable")
    neon_fma = cpu != "cortex-a8"  # the A8 has no VFPv4: VMLA, portable's rounding
    if not neon_fma:
        np.testing.assert_array_equal(y, host_port, err_msg=f"{arch} VMLA != host portable")
    elif (fma_isa := _host_fma_isa()) is not None:
        np.testing.assert_array_equal(
            y, _host_engine(bnn, x, fma_isa), err_msg=f"{arch} NEON FMA != host {fma_isa}"
        )
    else:  # no FMA kernel set on this host: float tolerance against portable
        _close(y, host_port, f"{arch} NEON vs host portable", 1e-4)
    if "fp32" in model:
        # FMA against separate rounding through a whole FP32 network: close, not equal
        _close(y, y_port, f"{arch} NEON vs portable", 1e-4)
        assert neon_fma == (neon_out.read_bytes() != port_out.read_bytes())

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
    same binary picks the portable kernels and gives the same bytes as the portable set on
    a NEON CPU (the NEON set's VFMA SGEMM rounds differently, so that one is not compared)."""
    inp, _ = _input(zoo, "vggsmall_bnn")
    outs = {}
    for cpu, isa in (("cortex-r5f", None), ("cortex-a7", None), ("cortex-a7", "portable")):
        out = zoo / f"vggsmall_bnn.armv7.{cpu}.{isa}.f32"
        report = _run_cli("armv7", zoo / "vggsmall_bnn.bnn", inp, out, isa, cpu)
        outs[cpu, isa] = (report["isa"], out.read_bytes())
    assert outs["cortex-r5f", None][0] == "portable" and outs["cortex-a7", None][0] == "neon"
    assert outs["cortex-r5f", None][1] == outs["cortex-a7", "portable"][1]
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


@pytest.mark.parametrize("arch", ["aarch64", "armv7"])
def test_maxpool_neon_under_qemu(cross_build, tmp_path: Path, arch: str) -> None:
    """The NEON max pool (16-, 4-channel blocks and a scalar tail over 91 channels) under
    qemu: NaN taps skipped, -inf and both zeros in the input, whole windows of NaN (-inf
    out); the same bytes as the portable kernel of the same binary and as the numpy
    evaluation of "v > m ? v : m" in tap order."""
    from native import format as F

    rng = np.random.default_rng(17)
    x = rng.standard_normal((1, 91, 11, 10)).astype(np.float32)
    flat = x.reshape(-1)
    picks = rng.choice(flat.size, size=(4, 150), replace=False)
    flat[picks[0]] = np.nan
    flat[picks[1]] = -np.inf
    flat[picks[2]] = 0.0
    flat[picks[3]] = -0.0
    x[0, :, :3, :3] = np.nan
    pool = F.MaxPool([0], 1, kernel=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1))
    model = tmp_path / "maxpool.bnn"
    F.write_model(F.NativeModel(x.shape, [pool], n_values=2, output_id=1), model)
    inp = tmp_path / "x.f32"
    x.astype("<f4").tofile(inp)
    outs = {}
    for isa in ("neon", "portable"):
        out = tmp_path / f"{isa}.f32"
        assert _run_cli(arch, model, inp, out, isa)["isa"] == isa
        outs[isa] = out.read_bytes()
    assert outs["neon"] == outs["portable"]
    got = np.frombuffer(outs["neon"], dtype="<f4").reshape(1, 91, 6, 5)
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=np.nan)
    ref = np.full(got.shape, -np.inf, np.float32)
    for i in range(3):
        for j in range(3):
            tap = padded[:, :, i::2, j::2][:, :, :6, :5]
            ref = np.where(tap > ref, tap, ref)
    assert ref.tobytes() == got.tobytes()
    assert np.isneginf(got[0, :, 0, 0]).all()  # the all-NaN corner window

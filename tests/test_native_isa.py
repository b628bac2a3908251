"""Run-time kernel selection of the native engine: every binary-conv kernel set this CPU
supports (BNNBENCH_ISA / set_isa / NativeEngine(isa=...) / CLI --isa) gives output
bit-identical to the portable kernels (models with FP32 layers: to float rounding, as the
AVX2 SGEMM uses FMA). For a set the CPU lacks, the test checks instead that asking for it
is a clear error, never a silent fallback (its kernel cannot run here)."""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest
from native_helpers import NATIVE, input_for, make_native, rand_f32, rand_sign, small_network

from native import engine as E
from native import format as F
from native.engine import NativeEngine, NativeError

CLI = NATIVE / "build" / "bnnbench-native"
X86_ISAS = ["popcnt", "avx2", "avx512"]


@pytest.fixture(scope="module", autouse=True)
def built() -> None:
    make_native()


def _runs_here(isa: str) -> bool:
    """True if the CPU has ``isa``; else checks that asking for it fails clearly."""
    if E.isa_supported(isa):
        return True
    data = F.dumps(_binary_net(np.random.default_rng(0)))
    with pytest.raises(NativeError, match="not supported"):
        NativeEngine(data, isa=isa)
    return False


def _binary_net(rng: np.random.Generator) -> F.NativeModel:
    """Two binary convs with odd channel counts, 3x3 pad 1 then a strided 1x1, to a vector."""
    c0, c1, c2 = 67, 130, 45
    layers = [
        F.Conv2dBin(
            [0],
            1,
            weight_sign=rand_sign(rng, (c1, c0, 3, 3)),
            threshold=rand_f32(rng, (c0,), 0.3),
            scale=rand_f32(rng, (c1,)),
            bias=rand_f32(rng, (c1,)),
            pads=(1, 1, 1, 1),
        ),
        F.Conv2dBin(
            [1],
            2,
            weight_sign=rand_sign(rng, (c2, c1, 1, 1)),
            scale=rand_f32(rng, (c2,)),
            bias=rand_f32(rng, (c2,)),
            strides=(2, 2),
        ),
        F.GlobalAvgPool([2], 3),
    ]
    return F.NativeModel((2, c0, 9, 11), layers, n_values=4, output_id=3)


def test_available_isas_and_default():
    avail = E.available_isas()
    assert "portable" in avail or E.kernel_isa() == "neon"
    assert E.kernel_isa() in avail
    assert not E.isa_supported("no-such-isa")


@pytest.mark.parametrize("isa", X86_ISAS)
@pytest.mark.parametrize("threads", [1, 2])
def test_isa_matches_portable_bit_exactly(isa, threads):
    if not _runs_here(isa):
        return
    rng = np.random.default_rng(3)
    for model in (_binary_net(rng), small_network(rng, c=5, hw=9, batch=2)):
        data = F.dumps(model)
        x = input_for(rng, model.input_shape)
        with NativeEngine(data, threads=threads, isa="portable") as eng:
            assert eng.isa == "portable"
            want = eng.run(x)
        with NativeEngine(data, threads=threads, isa=isa) as eng:
            assert eng.isa == isa
            got = eng.run(x)
        if any(isinstance(layer, F.Conv2dF32 | F.Gemm) for layer in model.layers):
            # the AVX2 SGEMM uses FMA (one rounding per multiply-add, not two): FP32 layers
            # agree to float rounding, not bit for bit; binary layers stay exact
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        else:
            np.testing.assert_array_equal(got, want)


def test_engine_isa_does_not_change_the_default():
    before = E.kernel_isa()
    rng = np.random.default_rng(1)
    with NativeEngine(F.dumps(_binary_net(rng)), isa="portable") as eng:
        assert eng.isa == "portable"
    assert E.kernel_isa() == before


def test_set_isa_and_errors():
    before = E.kernel_isa()
    try:
        E.set_isa("portable")
        assert E.kernel_isa() == "portable"
        with pytest.raises(NativeError, match="not supported"):
            E.set_isa("no-such-isa")
        with pytest.raises(NativeError, match="not supported"):
            NativeEngine(F.dumps(_binary_net(np.random.default_rng(0))), isa="bogus")
        assert E.kernel_isa() == "portable"
    finally:
        E.set_isa(before)


def _cli(path, *args, env=None):
    return subprocess.run(
        [str(CLI), str(path), "--runs", "1", "--json", *args],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )


@pytest.mark.parametrize("isa", X86_ISAS)
def test_cli_isa_flag_and_env_var(tmp_path, isa):
    path = tmp_path / "m.bnn"
    F.write_model(_binary_net(np.random.default_rng(4)), path)
    env = {k: v for k, v in os.environ.items() if k != "BNNBENCH_ISA"}
    if not E.isa_supported(isa):
        # an ISA the CPU lacks is an error, not a silent fallback
        proc = _cli(path, "--isa", isa, env=env)
        assert proc.returncode == 2 and "not supported" in proc.stderr
        proc = _cli(path, env={**env, "BNNBENCH_ISA": isa})
        assert proc.returncode == 1 and "BNNBENCH_ISA" in proc.stderr
        return  # error paths checked; the kernel itself cannot run on this CPU
    outs = {}
    for name, extra, e in [
        ("portable", ["--isa", "portable"], env),
        ("flag", ["--isa", isa], env),
        ("env", [], {**env, "BNNBENCH_ISA": isa}),
    ]:
        out = tmp_path / f"{name}.f32"
        proc = _cli(path, "--output", str(out), *extra, env=e)
        assert proc.returncode == 0, proc.stderr
        assert f'"isa": "{isa if name != "portable" else "portable"}"' in proc.stdout
        outs[name] = out.read_bytes()
    assert outs["flag"] == outs["portable"] and outs["env"] == outs["portable"]


def test_env_var_unknown_isa_is_an_error(tmp_path):
    path = tmp_path / "m.bnn"
    F.write_model(_binary_net(np.random.default_rng(4)), path)
    proc = _cli(path, env={**os.environ, "BNNBENCH_ISA": "sse9"})
    assert proc.returncode == 1 and "unknown ISA 'sse9'" in proc.stderr


# Kernel sets whose FP32 layers round alike (same SGEMM arithmetic: no FMA, or one FMA chain
# per output in the same k order), so whole networks agree bit for bit, sign flips included.
SAME_FLOATS = [("portable", "popcnt"), ("avx2", "avx512")]


@pytest.mark.slow  # the zoo, every kernel set
@pytest.mark.parametrize("arch", ["resnet18", "vggsmall"])
def test_zoo_models_bit_identical_across_isas_and_threads(tmp_path, arch):
    """Every binarized zoo model of ``arch``: each kernel set at 1 and 3 threads gives the
    output of the first set of its float family at 1 thread, bit for bit (where a family has
    one set here, across thread counts; the AVX-512 pair runs on an AVX-512 machine)."""
    from converters import api, zoo

    x = None
    for entry in zoo.write_zoo(tmp_path, archs=(arch,), algorithms=("bnn", "react")):
        bnn = tmp_path / f"{entry.path.stem}.bnn"
        api.convert(entry.path, "native", bnn, verify=False)
        if x is None:
            x = np.random.default_rng(5).standard_normal(zoo.input_shape(arch)).astype(np.float32)
        for family in SAME_FLOATS:
            want = None
            for isa in (i for i in family if E.isa_supported(i)):
                for threads in (1, 3):
                    with NativeEngine(bnn, threads=threads, isa=isa) as eng:
                        got = eng.run(x)
                    if want is None:
                        want = got
                    np.testing.assert_array_equal(
                        got, want, err_msg=f"{entry.path.stem} isa={isa} threads={threads}"
                    )


@pytest.mark.parametrize("isa", X86_ISAS)
def test_maxpool_kernels_bit_identical_with_nan_and_signed_zeros(isa):
    """Max pooling over 91 channels (the vector kernels' 64-, 32-, 16- and 8-channel blocks
    and a scalar tail), with padding, NaN (skipped), -inf and both zeros in the input: each
    kernel set gives the portable output bit for bit, and the portable output is the max of
    the non-NaN taps."""
    if not _runs_here(isa):
        return
    rng = np.random.default_rng(17)
    c = 91
    x = rng.standard_normal((2, c, 11, 10)).astype(np.float32)
    flat = x.reshape(-1)
    picks = rng.choice(flat.size, size=(4, 300), replace=False)
    flat[picks[0]] = np.nan
    flat[picks[1]] = -np.inf
    flat[picks[2]] = 0.0
    flat[picks[3]] = -0.0
    x[1, :, :3, :3] = np.nan  # whole windows of NaN: -inf out
    for pool in (
        F.MaxPool([0], 1, kernel=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1)),
        F.MaxPool([0], 1, kernel=(2, 2), strides=(1, 1)),
    ):
        data = F.dumps(F.NativeModel(x.shape, [pool], n_values=2, output_id=1))
        with NativeEngine(data, threads=2, isa="portable") as eng:
            want = eng.run(x)
        with NativeEngine(data, threads=2, isa=isa) as eng:
            got = eng.run(x)
        assert want.view(np.uint32).tolist() == got.view(np.uint32).tolist()
        kh, kw = pool.kernel
        pt, pl, pb, pr = pool.pads
        padded = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)), constant_values=np.nan)
        sh, sw = pool.strides
        ref = np.full(want.shape, -np.inf, np.float32)
        for i in range(kh):
            for j in range(kw):
                tap = padded[:, :, i::sh, j::sw][:, :, : want.shape[2], : want.shape[3]]
                ref = np.where(tap > ref, tap, ref)
        np.testing.assert_array_equal(want, ref)

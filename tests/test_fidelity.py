"""Fidelity: the native engine (``native.engine.NativeEngine``) against onnxruntime, on every
zoo model and on a dyadic model where both must agree bit for bit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_converters_util import OnnxBuilder, zoo_dir  # noqa: F401  (fixture)

from converters import api
from converters.verify import E2E_RTOL, LAYER_RTOL, verify_native
from converters.zoo import ALGORITHMS, ARCHS
from native import format as nf

MODELS = [f"{a}_{g}" for a in ARCHS for g in ALGORITHMS]


@pytest.fixture(scope="module")
def converted(zoo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:  # noqa: F811
    out = tmp_path_factory.mktemp("native")
    paths = {}
    for name in MODELS:
        api.convert(zoo_dir / f"{name}.onnx", "native", out / f"{name}.bnn", verify=False)
        paths[name] = out / f"{name}.bnn"
    return paths


@pytest.mark.parametrize("name", MODELS)
def test_zoo_model_matches_onnxruntime(zoo_dir: Path, converted: dict[str, Path],  # noqa: F811
                                       name: str) -> None:
    rep = verify_native(zoo_dir / f"{name}.onnx", converted[name], n_inputs=2, seed=0,
                        backend="native")
    assert rep["backend"] == "native"
    assert rep["passed"], rep["verdict"]
    lw = rep["layerwise"]
    assert lw["failed"] == [] and lw["max_rel_err"] <= LAYER_RTOL
    assert lw["checked"] >= (17 if name.startswith("vgg") else 40)
    # these seeds hit no sign flip: the whole network agrees too
    assert rep["max_rel_err"] <= E2E_RTOL
    assert rep["top1_agreement"] == 1.0
    assert rep["has_binary_layers"] == (not name.endswith("fp32"))


def test_multithreaded_engine_matches(zoo_dir: Path, converted: dict[str, Path]) -> None:  # noqa: F811
    rep = verify_native(zoo_dir / "resnet18_react.onnx", converted["resnet18_react"],
                        n_inputs=1, seed=5, threads=2, backend="native", layerwise=False)
    assert rep["passed"] and rep["threads"] == 2
    assert rep["max_rel_err"] <= E2E_RTOL


def test_verification_catches_a_wrong_weight_bit(zoo_dir: Path, converted: dict[str, Path],  # noqa: F811
                                                  tmp_path: Path) -> None:
    model = nf.loads(converted["vggsmall_bnn"].read_bytes())
    target = next(layer for layer in model.layers if isinstance(layer, nf.Conv2dBin))
    target.weight_sign[3, 5, 1, 1] *= -1  # one of 147,456 weights
    bad = tmp_path / "bad.bnn"
    nf.write_model(model, bad)
    rep = verify_native(zoo_dir / "vggsmall_bnn.onnx", bad, n_inputs=1, backend="native")
    assert not rep["passed"]
    assert rep["layerwise"]["failed"] == [target.name]
    assert target.name in rep["verdict"]


def test_verification_reports_an_engine_refusal(zoo_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    bad = tmp_path / "broken.bnn"
    good = tmp_path / "good.bnn"
    api.convert(zoo_dir / "vggsmall_fp32.onnx", "native", good, verify=False)
    model = nf.loads(good.read_bytes())
    model.layers[0].inputs = [7]  # a value nobody defines: the C loader must refuse it
    nf.write_model(model, bad)
    rep = verify_native(zoo_dir / "vggsmall_fp32.onnx", bad, n_inputs=1, backend="native",
                        layerwise=False)
    assert rep["passed"] is False and "backend error" in rep["verdict"]


def test_convert_runs_verification_by_default(zoo_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    s = api.convert(zoo_dir / "vggsmall_react.onnx", "native", tmp_path / "v.bnn")
    fid = s["fidelity"]
    assert fid["backend"] == "native" and fid["passed"] and fid["n_inputs"] == 2
    assert fid["tolerance"]["end_to_end_rel"] == E2E_RTOL


# ----------------------------------------------------------------------------- exactness


def _dyadic_model(path: Path) -> Path:
    """Every value in this network is a small dyadic rational, so float32 sums are exact in any
    order and onnxruntime and the engine must agree bit for bit. Odd multiples of a finer
    power of two in the biases and thresholds keep every pre-sign value away from exact 0."""
    rng = np.random.default_rng(11)
    b = OnnxBuilder([1, 4, 8, 8])

    def dy(shape: tuple[int, ...], lo: int, hi: int, den: int) -> np.ndarray:
        return (rng.integers(lo, hi, shape) / den).astype(np.float32)

    def odd(shape: tuple[int, ...], den: int) -> np.ndarray:
        return ((2 * rng.integers(-40, 40, shape) + 1) / den).astype(np.float32)

    def pow2(c: int) -> np.ndarray:
        return (2.0 ** rng.integers(-3, 2, (1, c, 1, 1))).astype(np.float32)

    # FP stem: conv + per-channel Mul/Add (folded into the conv), Hardtanh, max pool
    y = b.node("Conv", ["input", b.init(dy((8, 4, 3, 3), -4, 5, 16)),
                        b.init(dy((8,), -8, 8, 256))], pads=[1, 1, 1, 1])
    y = b.node("Add", [b.node("Mul", [y, b.init(pow2(8))]), b.init(odd((1, 8, 1, 1), 2048))])
    y = b.node("Clip", [y, b.init(-1.0), b.init(1.0)])
    y = b.node("MaxPool", [y], kernel_shape=[2, 2], strides=[2, 2])
    # BNN conv: Sign(x) ⊛ Sign(W), then per-channel scale and odd bias
    w1 = rng.normal(0, 1, (8, 8, 3, 3)).astype(np.float32)
    y = b.node("Conv", [b.node("Sign", [y]), b.node("Sign", [b.init(w1)])], pads=[1, 1, 1, 1])
    y = b.node("Add", [b.node("Mul", [y, b.init(pow2(8))]), b.init(odd((1, 8, 1, 1), 4096))])
    h = b.node("Clip", [y, b.init(-1.0), b.init(1.0)])
    # ReAct conv: Sign(x − t) ⊛ mean|W|·Sign(W) with |W| = 2^-k per output channel
    w2 = (np.where(rng.random((8, 8, 3, 3)) < 0.5, -1, 1)
          * 2.0 ** rng.integers(-3, 1, (8, 1, 1, 1))).astype(np.float32)
    wi = b.init(w2)
    alpha = b.node("ReduceMean", [b.node("Abs", [wi])], axes=[1, 2, 3], keepdims=1)
    xs = b.node("Sign", [b.node("Sub", [h, b.init(odd((1, 8, 1, 1), 8192))])])
    y = b.node("Conv", [xs, b.node("Mul", [alpha, b.node("Sign", [wi])])], pads=[1, 1, 1, 1])
    y = b.node("Add", [b.node("Mul", [y, b.init(pow2(8))]), b.init(dy((1, 8, 1, 1), -8, 8, 64))])
    y = b.node("Add", [y, h])  # residual
    y = b.node("Flatten", [b.node("GlobalAveragePool", [y])])
    y = b.node("Gemm", [y, b.init(dy((10, 8), -8, 8, 16)), b.init(dy((10,), -8, 8, 16))],
               transB=1)
    return b.save(path, y)


@pytest.mark.parametrize("backend", ["native", "reference"])
def test_dyadic_model_is_bit_exact(tmp_path: Path, backend: str) -> None:
    src = _dyadic_model(tmp_path / "dyadic.onnx")
    s = api.convert(src, "native", tmp_path / "dyadic.bnn", verify=False)
    assert s["n_binary_convs"] == 2
    rng = np.random.default_rng(0)
    # odd multiples of 1/16: dyadic and never exactly 0
    xs = [((2 * rng.integers(-16, 16, (1, 4, 8, 8)) + 1) / 16).astype(np.float32)
          for _ in range(3)]
    rep = verify_native(src, tmp_path / "dyadic.bnn", backend=backend, inputs=xs)
    assert rep["passed"]
    assert rep["max_abs_err"] == 0.0
    assert rep["layerwise"]["max_rel_err"] == 0.0

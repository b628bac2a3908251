"""LCE back end with the real LCE converter and interpreter (TensorFlow imported once here):
zoo conversion, the LceBconv2d count check, padding semantics, verification."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers.onnx_builder import OnnxBuilder, ort_run

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # before anything imports TensorFlow

from converters.backends.lce import check_bconv_count, convert_lce  # noqa: E402
from converters.backends.lce.verify import infer_padding_mode, verify_lce  # noqa: E402
from converters.backends.tflite.convert import convert_tflite  # noqa: E402
from converters.backends.tflite.flatbuffer import inspect_tflite  # noqa: E402
from converters.errors import UnsupportedModelError  # noqa: E402
from converters.frontend import load_ir  # noqa: E402

pytestmark = pytest.mark.slow

ZOO = [f"{a}_{g}" for a in ("vggsmall", "resnet18") for g in ("fp32", "bnn", "react")]
N_BIN = {"vggsmall": 5, "resnet18": 16}


@pytest.fixture(scope="module")
def converted(
    zoo_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, tuple[dict[str, Any], Path]]:
    """The six VGG-Small / ResNet-18 models converted once (exact padding)."""
    out = tmp_path_factory.mktemp("lce")
    result = {}
    for name in ZOO:
        graph = load_ir(zoo_dir / f"{name}.onnx")
        path = out / f"{name}.tflite"
        result[name] = (convert_lce(graph, path, {"source": name}), path)
    return result


@pytest.mark.parametrize("name", ZOO)
def test_zoo_converts_with_every_binary_conv_as_lce_bconv2d(converted: dict, name: str) -> None:
    summary, path = converted[name]
    arch, algo = name.split("_")
    n_bin = 0 if algo == "fp32" else N_BIN[arch]
    fb = inspect_tflite(path)
    assert summary["n_binary_convs"] == n_bin
    assert fb.count("LceBconv2d") == summary["n_lce_bconv2d"] == n_bin
    assert summary["size_bytes"] == path.stat().st_size
    assert summary["library"] == "lce" and summary["metadata"] == {"source": name}
    assert summary["converter_versions"]["larq-compute-engine"] == "0.16.0"
    assert fb.input_shapes == [summary["input_shape"]]
    assert not path.with_name(path.name + ".part").exists()
    if algo == "fp32":
        assert fb.custom_ops == []  # plain TFLite
        return
    # the folded BatchNorm went into the bconv: no float Mul left behind
    assert "MUL" not in fb.op_counts
    for o in fb.operators:
        if o.op == "LceBconv2d":
            assert o.custom_options is not None
            assert o.custom_options["pad_values"] == 0  # zero padding, exact
    if arch == "resnet18":
        # three stride-2 binary convs read PyTorch's top/left padding: mirrored SAME
        mirrored = [p for p in summary["padding"] if p["mapping"] == "same-zero-mirrored"]
        assert len(mirrored) == 3 and fb.count("REVERSE_V2") == 6
        assert all(
            p["onnx_pads"] == (1, 1, 1, 1) and p["read_pads"] == (1, 1, 0, 0) for p in mirrored
        )


@pytest.mark.parametrize("name", ZOO)
def test_zoo_verifies(zoo_dir: Path, converted: dict, name: str) -> None:
    _, path = converted[name]
    # ResNet-18: one input (≈3 s each); the layer-wise check is what proves the conversion
    n = 1 if name.startswith("resnet") else 2
    rep = verify_lce(zoo_dir / f"{name}.onnx", path, n_inputs=n, seed=0)
    assert rep["passed"], rep["verdict"]
    assert rep["padding_mode"] == "exact" and rep["exact_padding"]
    lw = rep["layerwise"]
    assert lw["checked"] >= 8 and lw["failed"] == [] and lw["max_rel_err"] <= 1e-4
    assert lw["probe_model_output_identical"]
    assert rep["matches_onnx"]
    if name.endswith("fp32"):
        # FP32 models: every input, tightly, against onnxruntime
        assert rep["vs_onnx"]["max_rel_err"] < 1e-5 and rep["top1_agreement"] == 1.0


def test_resnet34_converts(zoo_dir: Path, tmp_path: Path) -> None:
    # ≈15 s; its verification (≈30 s for 8 inputs) is in converters/lce_measure.py
    summary = convert_lce(load_ir(zoo_dir / "resnet34_react.onnx"), tmp_path / "r34.tflite", {})
    assert summary["n_binary_convs"] == summary["n_lce_bconv2d"] == 32
    assert summary["op_counts"]["REVERSE_V2"] == 6  # three stride-2 binary convs again


def test_refuses_binary_convs_lce_does_not_convert(zoo_dir: Path, tmp_path: Path) -> None:
    graph = load_ir(zoo_dir / "vggsmall_bnn.onnx")
    out = tmp_path / "sign.tflite"
    # plain tf.sign (what ONNX Sign maps to) is not LCE's binary activation
    with pytest.raises(
        UnsupportedModelError,
        match=r"5 of 5 binarized convs were not converted to LceBconv2d: "
        r"/features/features\.3/Conv",
    ):
        convert_lce(graph, out, {}, binary_activation="sign")
    assert not out.exists() and not list(tmp_path.iterdir())


def test_count_check_on_a_flatbuffer_with_fewer_bconvs(
    zoo_dir: Path,
    converted: dict,
) -> None:
    graph = load_ir(zoo_dir / "resnet18_bnn.onnx")
    check_bconv_count(graph, converted["resnet18_bnn"][1].read_bytes())  # 16 of 16: fine
    with pytest.raises(UnsupportedModelError, match="16 of 16 binarized convs") as exc:
        check_bconv_count(graph, converted["resnet18_fp32"][1].read_bytes())
    assert "/layer1/layer1.0/conv1/Conv" in str(exc.value)


def test_larq_sign_form_is_recognised_too(zoo_dir: Path, tmp_path: Path) -> None:
    graph = load_ir(zoo_dir / "vggsmall_react.onnx")
    summary = convert_lce(graph, tmp_path / "m.tflite", {}, binary_activation="larq_sign")
    assert summary["n_lce_bconv2d"] == 5


def test_verification_catches_a_wrong_model(zoo_dir: Path, converted: dict) -> None:
    # the ReAct artifact checked against the BNN model: other thresholds and weights
    rep = verify_lce(zoo_dir / "vggsmall_bnn.onnx", converted["vggsmall_react"][1], n_inputs=1)
    assert not rep["passed"]
    assert rep["verdict"].startswith("failed: layers beyond")


def test_fp32_for_tflite_runtime(zoo_dir: Path, tmp_path: Path) -> None:
    summary = convert_tflite(load_ir(zoo_dir / "vggsmall_fp32.onnx"), tmp_path / "m.tflite", {})
    assert summary["library"] == "tflite" and summary["custom_ops"] == []
    with pytest.raises(UnsupportedModelError, match="no binary kernels"):
        convert_tflite(load_ir(zoo_dir / "vggsmall_bnn.onnx"), tmp_path / "b.tflite", {})


# ----------------------------------------------------------------------------- padding


def _stride2_model(path: Path) -> Path:
    """One binary conv, 3×3, stride 2, pad 1 on an even 8×8 input: PyTorch pads top/left
    and bottom/right, but reads only the top/left padding."""
    rng = np.random.default_rng(3)
    b = OnnxBuilder([1, 32, 8, 8])
    xs = b.node("Sign", ["input"], name="/conv/Sign")
    ws = b.node(
        "Sign", [b.init(rng.normal(0, 1, (16, 32, 3, 3)), "conv.weight")], name="/conv/Sign_1"
    )
    y = b.node(
        "Conv", [xs, ws], name="/conv/Conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]
    )
    y = b.batchnorm(y, rng, 16, "/bn/BatchNormalization", mean_std=1, var_range=(100, 300))
    return b.save(path, y)


def _lce_run(tflite: Path, x: np.ndarray) -> np.ndarray:
    from larq_compute_engine.tflite.python.interpreter import Interpreter

    y = Interpreter(tflite.read_bytes(), num_threads=1).predict(np.transpose(x, (0, 2, 3, 1)))
    return np.transpose(np.asarray(y), (0, 3, 1, 2))


def test_stride2_zero_padding_is_exact(tmp_path: Path) -> None:
    onnx_path = _stride2_model(tmp_path / "s2.onnx")
    out = tmp_path / "s2.tflite"
    summary = convert_lce(load_ir(onnx_path), out, {})
    assert [p["mapping"] for p in summary["padding"]] == ["same-zero-mirrored"]
    assert summary["op_counts"]["REVERSE_V2"] == 2 and summary["n_lce_bconv2d"] == 1
    x = np.random.default_rng(0).standard_normal((1, 32, 8, 8)).astype(np.float32)
    ref = ort_run(onnx_path, x)
    y = _lce_run(out, x)
    assert np.abs(y - ref).max() <= 1e-5 * np.abs(ref).max()
    rep = verify_lce(onnx_path, out, n_inputs=2)
    assert (
        rep["passed"] and rep["matches_onnx"] and infer_padding_mode(inspect_tflite(out)) == "exact"
    )


def test_one_padding_changes_only_the_padded_border(tmp_path: Path) -> None:
    onnx_path = _stride2_model(tmp_path / "s2.onnx")
    out = tmp_path / "s2_one.tflite"
    summary = convert_lce(load_ir(onnx_path), out, {}, padding="one")
    assert summary["padding_mode"] == "one"
    assert [p["mapping"] for p in summary["padding"]] == ["explicit-one"]
    assert "REVERSE_V2" not in summary["op_counts"]
    x = np.random.default_rng(0).standard_normal((1, 32, 8, 8)).astype(np.float32)
    diff = np.abs(_lce_run(out, x) - ort_run(onnx_path, x)) > 1e-4
    assert diff[:, :, 0, :].any() and diff[:, :, :, 0].any()  # top row / left column: +1 taps
    assert not diff[:, :, 1:, 1:].any()  # nothing else read padding
    rep = verify_lce(onnx_path, out, n_inputs=2)  # mode inferred from the flatbuffer
    assert rep["padding_mode"] == "one"
    assert rep["passed"] and not rep["matches_onnx"]
    assert rep["vs_reference"]["max_rel_err"] <= 1e-5
    assert "differs from the ONNX model as expected" in rep["verdict"]
    # declared with the wrong semantics, the same artifact fails
    assert not verify_lce(onnx_path, out, n_inputs=1, padding="exact")["passed"]


def test_one_padding_on_vggsmall(zoo_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "v_one.tflite"
    summary = convert_lce(load_ir(zoo_dir / "vggsmall_bnn.onnx"), out, {}, padding="one")
    assert {p["mapping"] for p in summary["padding"]} == {"same-one"}
    fb = inspect_tflite(out)
    assert [o.custom_options["pad_values"] for o in fb.operators if o.op == "LceBconv2d"] == [1] * 5
    rep = verify_lce(zoo_dir / "vggsmall_bnn.onnx", out, n_inputs=2)
    assert rep["padding_mode"] == "one" and rep["passed"]
    assert rep["vs_reference"]["n_within_tolerance"] >= 1


def test_fp32_ops_outside_the_zoo(tmp_path: Path) -> None:
    """Average pool counting zero padding, a BatchNorm that stays an affine node, a Flatten
    that is the model output (NCHW order restored): matches onnxruntime."""
    rng = np.random.default_rng(5)
    b = OnnxBuilder([1, 3, 8, 8])
    y = b.node(
        "Conv",
        ["input", b.init(rng.normal(0, 0.5, (4, 3, 3, 3))), b.init(rng.normal(0, 0.1, 4))],
        kernel_shape=[3, 3],
        pads=[1, 1, 1, 1],
        strides=[1, 1],
    )
    window = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [2, 2]}
    y = b.node("AveragePool", [y], **window, count_include_pad=1)
    y = b.batchnorm(y, rng, 4)
    y = b.node("Flatten", [y], axis=1)
    onnx_path = b.save(tmp_path / "fp.onnx", y)
    graph = load_ir(onnx_path)
    assert {n.kind for n in graph.nodes} >= {"avgpool", "affine", "flatten"}
    out = tmp_path / "fp.tflite"
    convert_lce(graph, out, {})
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    from larq_compute_engine.tflite.python.interpreter import Interpreter

    got = Interpreter(out.read_bytes()).predict(np.transpose(x, (0, 2, 3, 1)))
    ref = ort_run(onnx_path, x)
    assert got.shape == ref.shape == (1, 4 * 4 * 4)
    assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max()
    assert verify_lce(onnx_path, out, n_inputs=2)["passed"]

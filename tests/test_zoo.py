"""The model zoo: valid ONNX shaped like a torch export, runnable in onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers.onnx_builder import ort_run
from onnx import numpy_helper
from typer.testing import CliRunner

from converters.zoo import ALGORITHMS, ARCHS, input_shape

pytestmark = pytest.mark.slow  # real processes, seconds each: not for the inner loop

MODELS = [(a, g) for a in ARCHS for g in ALGORITHMS]


@pytest.mark.parametrize(("arch", "algorithm"), MODELS)
def test_zoo_model_is_valid_and_runs(zoo_dir: Path, arch: str, algorithm: str) -> None:
    path = zoo_dir / f"{arch}_{algorithm}.onnx"
    onnx.checker.check_model(str(path), full_check=True)
    model = onnx.load(str(path))
    assert model.opset_import[0].version == 13
    props = {p.key: p.value for p in model.metadata_props}
    assert props["bnnbench.algorithm"] == algorithm
    assert (
        props["bnnbench.arch"]
        == {"resnet18": "ResNet18", "resnet34": "ResNet34", "vggsmall": "VGG-Small"}[arch]
    )
    x = np.random.default_rng(0).standard_normal(input_shape(arch)).astype(np.float32)
    y = ort_run(path, x)
    assert y.shape == (1, 10 if arch == "vggsmall" else 1000)
    assert np.all(np.isfinite(y))
    # activations neither died nor blew up: the logits vary and differ between inputs
    assert 0.05 < float(y.std()) < 10.0
    y2 = ort_run(path, -x)
    assert not np.allclose(y, y2)


def _by_name(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {n.name: n for n in model.graph.node}


def test_resnet_bnn_structure_like_torch_export(zoo_dir: Path) -> None:
    model = onnx.load(str(zoo_dir / "resnet18_bnn.onnx"))
    nodes = _by_name(model)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    conv = nodes["/layer1/layer1.0/conv1/Conv"]
    # activation path Sign(x), weight path Sign(W) on the initializer, not pre-folded
    act_sign = nodes["/layer1/layer1.0/conv1/Sign"]
    w_sign = nodes["/layer1/layer1.0/conv1/Sign_1"]
    assert list(conv.input) == [act_sign.output[0], w_sign.output[0]]
    assert list(w_sign.input) == ["layer1.0.conv1.weight"]
    assert inits["layer1.0.conv1.weight"].shape == (64, 64, 3, 3)
    assert len(np.unique(inits["layer1.0.conv1.weight"])) > 2  # latent real weights
    # stem and downsample stay FP32: their Conv reads the activation directly
    assert nodes["/conv1/Conv"].input[1] == "conv1.weight"
    ds = nodes["/layer2/layer2.0/downsample/downsample.0/Conv"]
    assert ds.input[1] == "layer2.0.downsample.0.weight"
    assert "/layer2/layer2.0/downsample/downsample.1/BatchNormalization" in nodes
    # Hardtanh as Clip(-1, 1); ResNet head GlobalAveragePool/Flatten/Gemm
    clip = nodes["/layer1/layer1.0/act/Clip"]
    consts = {
        n.output[0]: numpy_helper.to_array(n.attribute[0].t)
        for n in model.graph.node
        if n.op_type == "Constant"
    }
    assert float(consts[clip.input[1]]) == -1.0 and float(consts[clip.input[2]]) == 1.0
    assert {"/avgpool/GlobalAveragePool", "/Flatten", "/fc/Gemm"} <= set(nodes)
    mp = nodes["/maxpool/MaxPool"]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in mp.attribute}
    assert attrs["kernel_shape"] == [3, 3] and attrs["strides"] == [2, 2]
    assert attrs["pads"] == [1, 1, 1, 1]
    bn_eps = [
        a.f
        for n in model.graph.node
        if n.op_type == "BatchNormalization"
        for a in n.attribute
        if a.name == "epsilon"
    ]
    assert bn_eps and all(abs(e - 1e-5) < 1e-12 for e in bn_eps)
    n_weight_signs = sum(1 for n in model.graph.node if n.op_type == "Sign" and n.input[0] in inits)
    assert n_weight_signs == 16


def test_react_weight_and_threshold_pattern(zoo_dir: Path) -> None:
    model = onnx.load(str(zoo_dir / "vggsmall_react.onnx"))
    nodes = _by_name(model)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    scope = "/features/features.3"
    sub = nodes[f"{scope}/Sub"]
    assert inits[sub.input[1]].shape == (1, 128, 1, 1)
    assert nodes[f"{scope}/Sign"].input[0] == sub.output[0]
    rm = nodes[f"{scope}/ReduceMean"]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in rm.attribute}
    assert attrs == {"axes": [1, 2, 3], "keepdims": 1}
    assert nodes[f"{scope}/Abs"].input[0] == "features.3.weight"
    mul = nodes[f"{scope}/Mul"]
    assert list(mul.input) == [rm.output[0], nodes[f"{scope}/Sign_1"].output[0]]
    assert nodes[f"{scope}/Conv"].input[1] == mul.output[0]
    # VGG-Small: first conv FP32, five binarized, 2×2 max pools, 8192→10 classifier
    assert nodes["/features/features.0/Conv"].input[0] == "input"
    assert sum(1 for n in model.graph.node if n.op_type == "Conv") == 6
    assert sum(1 for n in model.graph.node if n.op_type == "Sub") == 5
    assert inits["classifier.weight"].shape == (10, 512 * 4 * 4)


def test_fp32_variant_has_no_sign(zoo_dir: Path) -> None:
    model = onnx.load(str(zoo_dir / "resnet34_fp32.onnx"))
    ops = {n.op_type for n in model.graph.node}
    assert "Sign" not in ops
    assert sum(1 for n in model.graph.node if n.op_type == "Conv") == 36


def test_zoo_is_deterministic() -> None:
    from converters.zoo import build_model

    a = build_model("vggsmall", "bnn", seed=3).SerializeToString()
    b = build_model("vggsmall", "bnn", seed=3).SerializeToString()
    c = build_model("vggsmall", "bnn", seed=4).SerializeToString()
    assert a == b and a != c


def test_zoo_cli_writes_selected_models(tmp_path: Path) -> None:
    from bnnbench.cli import app

    res = CliRunner().invoke(
        app,
        [
            "zoo",
            str(tmp_path / "z"),
            "--arch",
            "vggsmall",
            "--algorithm",
            "bnn",
            "--algorithm",
            "react",
        ],
    )
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "z").iterdir()) == [
        "vggsmall_bnn.onnx",
        "vggsmall_react.onnx",
    ]
    assert "vggsmall_react.onnx" in res.output

    bad = CliRunner().invoke(app, ["zoo", str(tmp_path / "y"), "--arch", "resnet50"])
    assert bad.exit_code == 2
    assert "resnet50" in bad.output

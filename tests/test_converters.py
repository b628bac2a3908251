"""ONNX front end, IR matching, native writer, analysis, API and CLI of the converters."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers.onnx_builder import OnnxBuilder, ort_run
from typer.testing import CliRunner

from bnnbench.digest import sha256_file
from converters import api, ir, reference
from converters.analyze import analyze_graph
from converters.backends.native import to_native_model
from converters.errors import ConversionError, MalformedModelError, UnsupportedModelError
from converters.frontend import load_ir, to_ir
from native import format as nf

RNG = np.random.default_rng(1234)


def _native_out(graph: ir.Graph, x: np.ndarray) -> np.ndarray:
    """Run the converted graph in the C engine, cross-checked by the numpy reference."""
    from native.engine import NativeEngine

    data = nf.dumps(to_native_model(graph))
    ref = reference.run(data, x)
    with NativeEngine(data) as eng:
        y = np.array(eng.run(x))
    np.testing.assert_allclose(y, ref, rtol=0, atol=1e-5 * max(1.0, float(np.abs(ref).max())))
    return y


def _conv_w(o: int, i: int, k: int = 3) -> np.ndarray:
    return RNG.normal(0, np.sqrt(2 / (i * k * k)), (o, i, k, k)).astype(np.float32)


def _bn(b: OnnxBuilder, x: str, c: int, name: str | None = None) -> str:
    return b.batchnorm(x, RNG, c, name=name)


def _x(shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(7).standard_normal(shape).astype(np.float32)


# ----------------------------------------------------------------------------- zoo analysis


@pytest.mark.parametrize(
    ("name", "n_bin", "n_conv"),
    [
        ("resnet18_fp32", 0, 20),
        ("resnet18_bnn", 16, 20),
        ("resnet18_react", 16, 20),
        ("resnet34_fp32", 0, 36),
        ("resnet34_bnn", 32, 36),
        ("resnet34_react", 32, 36),
        ("vggsmall_fp32", 0, 6),
        ("vggsmall_bnn", 5, 6),
        ("vggsmall_react", 5, 6),
    ],
)
@pytest.mark.slow  # writes the whole zoo
def test_zoo_analysis_counts(zoo_dir: Path, name: str, n_bin: int, n_conv: int) -> None:
    r = api.analyze(zoo_dir / f"{name}.onnx")
    assert r["n_binary_convs"] == n_bin
    assert r["n_convs"] == n_conv
    assert r["algorithm"] == name.split("_")[1]
    binarized = [n for n in r["nodes"] if n["binarized"]]
    assert len(binarized) == n_bin
    assert all(n["kernel"] == [3, 3] for n in binarized)  # only 3×3 block convs
    fp_convs = [n for n in r["nodes"] if n["op"] == "conv"]
    assert all("kept FP32" in n["why"] for n in fp_convs)
    assert json.loads(json.dumps(r)) == r  # JSON-serialisable as is
    t = r["totals"]
    assert t["params_total"] == t["params_fp"] + t["params_bin"]
    assert t["flops_total"] == t["flops_fp"] + t["bops"]
    if n_bin == 0:
        assert r["theoretical"]["speedup"] == 1.0 and r["theoretical"]["compression"] == 1.0
    else:
        assert r["theoretical"]["speedup"] > 5 and r["theoretical"]["compression"] > 5


@pytest.mark.slow  # writes the whole zoo
def test_resnet18_counts_and_theoretical_track(zoo_dir: Path) -> None:
    fp = api.analyze(zoo_dir / "resnet18_fp32.onnx")
    # the classic "1.8 GFLOPs" of ResNet-18 at 224² is its MAC count
    assert fp["totals"]["flops_total"] == 1_814_073_344
    assert fp["totals"]["bops"] == 0
    bnn = api.analyze(zoo_dir / "resnet18_bnn.onnx")
    assert bnn["totals"]["flops_total"] == fp["totals"]["flops_total"]
    # 3×3 block convs of ResNet-18: 10,985,472 weights become 1-bit
    assert bnn["totals"]["params_bin"] == 10_985_472
    th = bnn["theoretical"]
    assert th["speedup"] == pytest.approx(11.06, abs=0.01)
    assert th["compression"] == pytest.approx(11.17, abs=0.01)
    assert th["om"] == pytest.approx(
        np.sqrt((th["speedup"] ** 2 + th["compression"] ** 2) / 2), abs=1e-3
    )
    react = api.analyze(zoo_dir / "resnet18_react.onnx")
    # thresholds are extra FP parameters: slightly less compression, same operations
    assert react["theoretical"]["compression"] < th["compression"]
    assert react["theoretical"]["speedup"] == th["speedup"]


def test_paper_layer_set_reproduces_table3() -> None:
    """With the 1×1 downsample convs binarized too (the paper's count), ResNet-18 lands on
    BiBench Table 3: compression 13.27 (BNN) / 13.20 (ReAct), speedup 12.60 within 1 %."""
    from converters.zoo import build_model

    bnn = analyze_graph(to_ir(build_model("resnet18", "bnn", binarize_downsample=True)))
    assert bnn["n_binary_convs"] == 19
    assert bnn["theoretical"]["compression"] == pytest.approx(13.27, abs=0.01)
    assert bnn["theoretical"]["speedup"] == pytest.approx(12.60, rel=0.01)
    react = analyze_graph(to_ir(build_model("resnet18", "react", binarize_downsample=True)))
    assert react["theoretical"]["compression"] == pytest.approx(13.20, abs=0.03)


@pytest.mark.slow  # writes the whole zoo
def test_algorithm_inferred_without_metadata(zoo_dir: Path, tmp_path: Path) -> None:
    for alg in ("fp32", "bnn", "react"):
        m = onnx.load(str(zoo_dir / f"vggsmall_{alg}.onnx"))
        del m.metadata_props[:]
        p = tmp_path / f"{alg}.onnx"
        onnx.save(m, str(p))
        r = api.analyze(p)
        assert r["algorithm"] == alg
        assert r["algorithm_source"] == "inferred"
        assert r["arch"] is None


# ----------------------------------------------------------------------------- malformed


def test_random_bytes_are_malformed(tmp_path: Path) -> None:
    p = tmp_path / "random.onnx"
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(MalformedModelError):
        api.analyze(p)
    with pytest.raises(MalformedModelError):
        api.convert(p, "native", tmp_path / "out.bnn")
    assert not (tmp_path / "out.bnn").exists()
    assert not list(tmp_path.glob("*.part"))


@pytest.mark.slow  # writes the whole zoo
def test_truncated_protobuf_is_malformed(zoo_dir: Path, tmp_path: Path) -> None:
    data = (zoo_dir / "vggsmall_bnn.onnx").read_bytes()
    p = tmp_path / "trunc.onnx"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(MalformedModelError, match="trunc.onnx"):
        load_ir(p)


def test_initializer_data_that_does_not_fit_its_shape_is_malformed(tmp_path: Path) -> None:
    # found by tests/test_fuzz_inputs.py: a flipped bit in dims made numpy's reshape raise a
    # bare ValueError, stored as an internal error instead of the uploader's mistake
    w = onnx.numpy_helper.from_array(np.zeros(2, np.float32), "w")
    w.dims[:] = [12]
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [12])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [12])
    node = onnx.helper.make_node("Add", ["x", "w"], ["y"])
    graph = onnx.helper.make_graph([node], "g", [x], [y], [w])
    p = tmp_path / "bad_dims.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 13)]), p)
    with pytest.raises(MalformedModelError, match="initializer 'w'.*shape"):
        api.analyze(p)


def test_empty_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(MalformedModelError, match="no such file"):
        load_ir(tmp_path / "nope.onnx")
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(MalformedModelError):
        load_ir(empty)


def test_checker_failure_is_malformed(tmp_path: Path) -> None:
    b = OnnxBuilder([1, 3, 4, 4])
    out = b.node("Relu", ["does_not_exist"])
    with pytest.raises(MalformedModelError):
        load_ir(b.save(tmp_path / "bad.onnx", out))


# ----------------------------------------------------------------------------- refusals


def _refusal(tmp_path: Path, b: OnnxBuilder, out: str) -> UnsupportedModelError:
    with pytest.raises(UnsupportedModelError) as ei:
        load_ir(b.save(tmp_path / "m.onnx", out))
    return ei.value


def test_unsupported_op_names_node_and_op(tmp_path: Path) -> None:
    b = OnnxBuilder([1, 3, 8, 8])
    y = b.node("Conv", ["input", b.init(_conv_w(4, 3))], pads=[1, 1, 1, 1])
    y = b.node("Softmax", [y], name="/head/Softmax", axis=1)
    y = b.node("Conv", [y, b.init(_conv_w(4, 4))], pads=[1, 1, 1, 1])
    err = _refusal(tmp_path, b, y)
    assert err.node == "/head/Softmax" and err.op == "Softmax"
    assert "'/head/Softmax' (Softmax)" in str(err) and "not supported" in str(err)


def test_lstm_is_refused(tmp_path: Path) -> None:
    b = OnnxBuilder([5, 1, 4])  # seq, batch, features
    w = b.init(RNG.normal(0, 0.1, (1, 32, 4)))
    r = b.init(RNG.normal(0, 0.1, (1, 32, 8)))
    y = b.node("LSTM", ["input", w, r], name="/rnn/LSTM", hidden_size=8)
    err = _refusal(tmp_path, b, y)
    assert (err.node, err.op) == ("/rnn/LSTM", "LSTM")


@pytest.mark.parametrize(
    ("attrs", "wshape", "needle"),
    [
        ({"dilations": [2, 2]}, (4, 3, 3, 3), "dilations=[2, 2]"),
        ({"group": 3}, (3, 1, 3, 3), "groups=3"),
    ],
)
def test_dilation_and_groups_refused(
    tmp_path: Path, attrs: dict, wshape: tuple, needle: str
) -> None:
    b = OnnxBuilder([1, 3, 8, 8])
    w = RNG.normal(0, 0.3, wshape).astype(np.float32)
    y = b.node("Conv", ["input", b.init(w)], name="/c/Conv", pads=[1, 1, 1, 1], **attrs)
    err = _refusal(tmp_path, b, y)
    assert err.node == "/c/Conv" and err.op == "Conv" and needle in str(err)


def test_sign_not_feeding_conv_refused(tmp_path: Path) -> None:
    b = OnnxBuilder([1, 3, 8, 8])
    s = b.node("Sign", ["input"], name="/act/Sign")
    y = b.node("Relu", [s])
    err = _refusal(tmp_path, b, y)
    assert err.node == "/act/Sign" and "does not feed a conv" in str(err)


def test_binary_input_with_float_weights_refused(tmp_path: Path) -> None:
    b = OnnxBuilder([1, 3, 8, 8])
    s = b.node("Sign", ["input"])
    y = b.node("Conv", [s, b.init(_conv_w(4, 3))], name="/b/Conv", pads=[1, 1, 1, 1])
    err = _refusal(tmp_path, b, y)
    assert "conv '/b/Conv' has binarized input but float weights: not representable" in str(err)


def test_non_constant_weight_refused(tmp_path: Path) -> None:
    b = OnnxBuilder([1, 4, 3, 3])
    w = b.node("Relu", ["input"])  # a weight computed from the activation
    y = b.node("Conv", ["input", w], name="/dyn/Conv")
    err = _refusal(tmp_path, b, y)
    assert err.node == "/dyn/Conv" and "not a constant" in str(err)


def test_symbolic_non_batch_dim_refused(tmp_path: Path) -> None:
    b = OnnxBuilder([1, 3, "height", 8])
    y = b.node("Relu", ["input"])
    with pytest.raises(UnsupportedModelError, match="symbolic dimension 2"):
        load_ir(b.save(tmp_path / "m.onnx", y))


def test_broadcasting_batch_dims_refused(tmp_path: Path) -> None:
    b = OnnxBuilder([1, 3, 4, 4])
    y = b.node("Mul", ["input", b.init(np.ones((2, 3, 1, 1)))], name="/m/Mul")
    err = _refusal(tmp_path, b, y)
    assert err.op == "Mul" and "without changing its shape" in str(err)


@pytest.mark.slow  # writes the whole zoo
def test_unknown_library(zoo_dir: Path, tmp_path: Path) -> None:
    src = zoo_dir / "vggsmall_bnn.onnx"
    with pytest.raises(UnsupportedModelError, match="unknown library 'tvm'"):
        api.convert(src, "tvm", tmp_path / "m.x")
    assert issubclass(UnsupportedModelError, ConversionError)


# ----------------------------------------------------------------------------- matching


def test_constant_folding_bnn_weight_pattern(tmp_path: Path) -> None:
    b = OnnxBuilder([1, 8, 6, 6])
    w = _conv_w(4, 8)
    s = b.node("Sign", ["input"])
    ws = b.node("Sign", [b.init(w, "conv.weight")])
    y = b.node("Conv", [s, ws], name="/conv/Conv", pads=[1, 1, 1, 1])
    g = load_ir(b.save(tmp_path / "m.onnx", y))
    (n,) = g.nodes
    assert isinstance(n, ir.BinConv)
    assert np.array_equal(n.weight_sign, np.where(w < 0, -1, 1))
    assert np.all(n.scale == 1) and n.threshold is None
    assert "binarized" in n.note and "sign(x)" in n.note
    x = _x((1, 8, 6, 6))
    np.testing.assert_allclose(_native_out(g, x), ort_run(b.model(y), x), rtol=0, atol=1e-5)


def test_constant_folding_react_weight_pattern(tmp_path: Path) -> None:
    b = OnnxBuilder([1, 8, 6, 6])
    w = _conv_w(4, 8)
    t = RNG.normal(0, 0.3, (1, 8, 1, 1)).astype(np.float32)
    xs = b.node("Sign", [b.node("Sub", ["input", b.init(t)])])
    wi = b.init(w)
    alpha = b.node("ReduceMean", [b.node("Abs", [wi])], axes=[1, 2, 3], keepdims=1)
    wb = b.node("Mul", [alpha, b.node("Sign", [wi])])
    y = b.node("Conv", [xs, wb], name="/conv/Conv", pads=[1, 1, 1, 1], strides=[2, 2])
    g = load_ir(b.save(tmp_path / "m.onnx", y))
    (n,) = g.nodes
    assert isinstance(n, ir.BinConv)
    np.testing.assert_allclose(n.scale, np.abs(w).mean(axis=(1, 2, 3)), rtol=1e-6)
    np.testing.assert_array_equal(n.threshold, t.reshape(-1))
    assert n.strides == (2, 2) and n.pads == (1, 1, 1, 1)
    assert "threshold" in n.note and "α" in n.note
    x = _x((1, 8, 6, 6))
    np.testing.assert_allclose(_native_out(g, x), ort_run(b.model(y), x), rtol=0, atol=1e-5)


def test_add_bias_before_sign_becomes_negated_threshold(tmp_path: Path) -> None:
    b = OnnxBuilder([1, 4, 5, 5])
    bias = RNG.normal(0, 0.3, (1, 4, 1, 1)).astype(np.float32)
    s = b.node("Sign", [b.node("Add", ["input", b.init(bias)])])  # ReActNet's LearnableBias
    y = b.node("Conv", [s, b.node("Sign", [b.init(_conv_w(2, 4))])], pads=[1, 1, 1, 1])
    (n,) = load_ir(b.save(tmp_path / "m.onnx", y)).nodes
    np.testing.assert_array_equal(n.threshold, -bias.reshape(-1))


def test_batchnorm_folded_into_fp_and_binary_conv(tmp_path: Path) -> None:
    b = OnnxBuilder([1, 3, 8, 8])
    y = b.node(
        "Conv",
        ["input", b.init(_conv_w(8, 3)), b.init(RNG.normal(0, 0.1, 8))],
        name="/c0/Conv",
        pads=[1, 1, 1, 1],
    )
    y = _bn(b, y, 8, name="/bn0/BatchNormalization")
    y = b.node("Clip", [y, b.init(-1.0), b.init(1.0)])
    y = b.node(
        "Conv",
        [b.node("Sign", [y]), b.node("Sign", [b.init(_conv_w(8, 8))])],
        name="/c1/Conv",
        pads=[1, 1, 1, 1],
    )
    y = _bn(b, y, 8, name="/bn1/BatchNormalization")
    g = load_ir(b.save(tmp_path / "m.onnx", y))
    kinds = [n.kind for n in g.nodes]
    assert kinds == ["conv", "clip", "binconv"]  # both BatchNorms folded away
    assert g.nodes[0].sources == ["/c0/Conv", "/bn0/BatchNormalization"]
    assert "BatchNorm '/bn1/BatchNormalization' folded in" in g.nodes[2].note
    assert g.nodes[2].onnx_output == y
    x = _x((1, 3, 8, 8))
    np.testing.assert_allclose(_native_out(g, x), ort_run(b.model(y), x), rtol=0, atol=1e-4)


def test_batchnorm_after_shared_conv_output_is_affine(tmp_path: Path) -> None:
    b = OnnxBuilder([1, 3, 8, 8])
    c = b.node("Conv", ["input", b.init(_conv_w(3, 3))], pads=[1, 1, 1, 1])
    y = _bn(b, c, 3)
    y = b.node("Add", [y, c])  # the conv output has a second consumer: BN cannot be folded
    g = load_ir(b.save(tmp_path / "m.onnx", y))
    assert [n.kind for n in g.nodes] == ["conv", "affine", "add"]
    assert "not foldable" in g.nodes[1].note
    x = _x((1, 3, 8, 8))
    np.testing.assert_allclose(_native_out(g, x), ort_run(b.model(y), x), rtol=0, atol=1e-5)


def test_weight_only_binarized_conv_stays_fp32(tmp_path: Path) -> None:
    b = OnnxBuilder([1, 3, 6, 6])
    y = b.node("Conv", ["input", b.node("Sign", [b.init(_conv_w(4, 3))])], pads=[1, 1, 1, 1])
    (n,) = load_ir(b.save(tmp_path / "m.onnx", y)).nodes
    assert isinstance(n, ir.Conv)
    assert "weight-only binarization" in n.note


def test_gemm_transb_matmul_add_and_reshape(tmp_path: Path) -> None:
    b = OnnxBuilder([1, 4, 3, 3])
    y = b.node("Relu", ["input"])
    y = b.node("Reshape", [y, b.init([1, -1], dtype=np.int64)])
    y = b.node(
        "Gemm",
        [y, b.init(RNG.normal(0, 0.2, (36, 12))), b.init(RNG.normal(0, 1, 12))],
        alpha=0.5,
        beta=2.0,
        transB=0,
    )
    y = b.node("MatMul", [y, b.init(RNG.normal(0, 0.2, (12, 5)))])
    y = b.node("Add", [y, b.init(RNG.normal(0, 1, 5))])
    g = load_ir(b.save(tmp_path / "m.onnx", y))
    assert [n.kind for n in g.nodes] == ["clip", "flatten", "gemm", "gemm"]
    assert g.nodes[3].bias is not None  # the Add was folded into the MatMul's Gemm
    x = _x((1, 4, 3, 3))
    np.testing.assert_allclose(_native_out(g, x), ort_run(b.model(y), x), rtol=0, atol=1e-5)


def test_auto_pad_ceil_mode_avgpool_and_symbolic_batch(tmp_path: Path) -> None:
    b = OnnxBuilder(["N", 3, 9, 9])
    y = b.node("Conv", ["input", b.init(_conv_w(4, 3))], auto_pad="SAME_UPPER", strides=[2, 2])
    y = b.node("MaxPool", [y], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)
    y = b.node(
        "AveragePool",
        [y],
        kernel_shape=[3, 3],
        pads=[1, 1, 1, 1],
        strides=[1, 1],
        count_include_pad=0,
    )
    y = b.node("GlobalAveragePool", [y])
    y = b.node("Flatten", [y])
    g = load_ir(b.save(tmp_path / "m.onnx", y))
    conv, mp = g.nodes[0], g.nodes[1]
    assert conv.pads == (1, 1, 1, 1) and conv.out_shape == (1, 4, 5, 5)
    assert mp.out_shape == (1, 4, 3, 3) and mp.pads == (0, 0, 1, 1)
    assert g.input_shape == (1, 3, 9, 9)
    assert any("batch" in note for note in g.notes)
    x = _x((1, 3, 9, 9))
    np.testing.assert_allclose(_native_out(g, x), ort_run(b.model(y), x), rtol=0, atol=1e-5)


def test_torch_flatten_idiom_via_shape_folds(tmp_path: Path) -> None:
    b = OnnxBuilder([1, 2, 3, 3])
    shp = b.node("Shape", ["input"])
    n0 = b.node("Gather", [shp, b.init(0, dtype=np.int64)], axis=0)
    dims = b.node(
        "Concat",
        [b.node("Unsqueeze", [n0, b.init([0], dtype=np.int64)]), b.init([-1], dtype=np.int64)],
        axis=0,
    )
    y = b.node("Reshape", ["input", dims])
    g = load_ir(b.save(tmp_path / "m.onnx", y, out_shape=[1, 18]))
    assert [n.kind for n in g.nodes] == ["flatten"]


@pytest.mark.slow  # writes the whole zoo
def test_external_data_model(zoo_dir: Path, tmp_path: Path) -> None:
    m = onnx.load(str(zoo_dir / "vggsmall_react.onnx"))
    p = tmp_path / "ext" / "model.onnx"
    p.parent.mkdir()
    onnx.save(m, str(p), save_as_external_data=True, location="model.data", size_threshold=0)
    assert p.stat().st_size < 200_000  # weights really live in model.data
    s = api.convert(p, "native", tmp_path / "ext.bnn", verify=False)
    assert s["n_binary_convs"] == 5


# ----------------------------------------------------------------------------- writer / API


@pytest.mark.slow  # writes the whole zoo
def test_convert_summary_and_native_file(zoo_dir: Path, tmp_path: Path) -> None:
    src = zoo_dir / "resnet18_react.onnx"
    out = tmp_path / "r18.bnn"
    s = api.convert(src, "native", out, verify=False)
    data = out.read_bytes()
    assert s["size_bytes"] == len(data) == out.stat().st_size
    assert s["sha256"] == sha256_file(out)
    assert s["source_sha256"] == sha256_file(src)
    assert (s["n_binary_convs"], s["n_convs"]) == (16, 20)
    assert s["binarized_nodes"][0] == "/layer1/layer1.0/conv1/Conv"
    assert s["library"] == "native" and s["output"] == str(out) and s["elapsed_s"] >= 0
    # 1-bit weights: the file is far smaller than the FP32 ONNX
    assert len(data) < src.stat().st_size / 8
    model = nf.loads(data)
    assert model.metadata["padding_mode"] == "zero"
    assert model.metadata["source_sha256"] == s["source_sha256"]
    assert model.metadata["converter_version"] == s["converter_version"]
    assert model.metadata["arch"] == "ResNet18" and model.metadata["algorithm"] == "react"
    bins = [layer for layer in model.layers if isinstance(layer, nf.Conv2dBin)]
    assert len(bins) == 16 and all(b.threshold is not None for b in bins)
    assert model.input_shape == (1, 3, 224, 224)


@pytest.mark.slow  # writes the whole zoo
def test_reference_matches_onnxruntime_on_zoo_vgg(zoo_dir: Path, tmp_path: Path) -> None:
    for alg in ("fp32", "bnn", "react"):
        src = zoo_dir / f"vggsmall_{alg}.onnx"
        x = _x((1, 3, 32, 32))
        y = reference.run(nf.dumps(to_native_model(load_ir(src))), x)
        ref = ort_run(src, x)
        assert np.abs(y - ref).max() <= 1e-4 * np.abs(ref).max()


# ----------------------------------------------------------------------------- CLI


@pytest.mark.slow  # writes the whole zoo
def test_cli_analyze_and_convert(zoo_dir: Path, tmp_path: Path) -> None:
    from bnnbench.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["analyze", str(zoo_dir / "vggsmall_bnn.onnx")])
    assert res.exit_code == 0, res.output
    r = json.loads(res.stdout)
    assert r["n_binary_convs"] == 5 and r["arch"] == "VGG-Small"
    assert r["flop_convention"].startswith("MACs")
    assert {"speedup", "compression", "om"} <= set(r["theoretical"])

    out = tmp_path / "v.bnn"
    res = runner.invoke(
        app,
        [
            "convert",
            str(zoo_dir / "vggsmall_bnn.onnx"),
            "--to",
            "native",
            "-o",
            str(out),
            "--json",
            "--no-verify",
        ],
    )
    assert res.exit_code == 0, res.output
    s = json.loads(res.stdout)
    assert s["size_bytes"] == out.stat().st_size > 0

    res = runner.invoke(app, ["convert", str(zoo_dir / "vggsmall_bnn.onnx"), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "fidelity" in res.stdout and "passed" in res.stdout


def test_cli_errors_exit_2_with_one_line(tmp_path: Path) -> None:
    from bnnbench.cli import app

    b = OnnxBuilder([1, 3, 8, 8])
    y = b.node("Conv", ["input", b.init(_conv_w(4, 3))], name="/c/Conv", dilations=[2, 2])
    src = b.save(tmp_path / "dil.onnx", y)
    res = CliRunner().invoke(
        app, ["convert", str(src), "--to", "native", "-o", str(tmp_path / "o.bnn")]
    )
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and "'/c/Conv' (Conv)" in lines[0] and "dilations" in lines[0]
    assert not (tmp_path / "o.bnn").exists()

    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\x01not an onnx file")
    res = CliRunner().invoke(app, ["analyze", str(junk)])
    assert res.exit_code == 2 and "junk.onnx" in res.output

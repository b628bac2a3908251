"""daBNN back end: .dab writer/reader against the schema, the converter's mapping and
refusals, and the numpy reference of daBNN's runtime (there is no daBNN here; the recorded
outputs of the real runtime in tests/data/dabnn/ tie the reference to it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from converters import ir, numpy_ops
from converters.backends.dabnn import (
    DabFormatError,
    bits,
    check_model,
    convert_dabnn,
    dumps,
    execute,
    lower,
    read_dab,
    run_dab,
    schema,
    verify_dabnn,
)
from converters.backends.dabnn.model import Layer
from converters.backends.dabnn.reference import nhwc_to_ir
from converters.errors import UnsupportedModelError
from converters.numpy_ops import BinarySemantics
from converters.reference import DABNN, FORMAT, run_ir

DATA = Path(__file__).parent / "data" / "dabnn"


# -- tiny IR graphs ----------------------------------------------------------------------


def _signs(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return np.where(rng.random(shape) < 0.5, -1, 1).astype(np.int8)


class _G:
    """Builds an ir.Graph node by node, keeping shapes."""

    def __init__(self, shape: tuple[int, int, int, int], seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[ir.Node] = []
        self.shapes: dict[str, tuple[int, ...]] = {"input": shape}
        self.last = "input"

    def _add(self, node: ir.Node) -> str:
        self.nodes.append(node)
        self.shapes[node.output] = node.out_shape
        self.last = node.output
        return node.output

    def _node(
        self, cls: type[ir.Node], prefix: str, inputs: list[str], shape: tuple, **fields: Any
    ) -> str:
        """A ``cls`` node named ``<prefix><index>`` with output ``<name>_out``."""
        name = f"{prefix}{len(self.nodes)}"
        return self._add(cls(name, inputs, f"{name}_out", shape, **fields))

    def _window(self, x: str, k: int, stride: int, pad: int) -> tuple[int, int, int, int, dict]:
        """N, C, OH, OW of a k×k window over ``x``, and its strides and pads as node fields."""
        n, c, h, w = self.shapes[x]
        oh, ow = ir.conv_out_hw(h, w, (k, k), (stride, stride), (pad,) * 4)
        return n, c, oh, ow, {"strides": (stride, stride), "pads": (pad,) * 4}

    def conv(self, x: str, cout: int, k: int = 3, stride: int = 1, pad: int = 1) -> str:
        n, c, oh, ow, window = self._window(x, k, stride, pad)
        wt = self.rng.normal(0, np.sqrt(2 / (c * k * k)), (cout, c, k, k)).astype(np.float32)
        b = self.rng.normal(0, 0.1, cout).astype(np.float32)
        return self._node(ir.Conv, "conv", [x], (n, cout, oh, ow), weight=wt, bias=b, **window)

    def binconv(
        self, x: str, cout: int, k: int = 3, stride: int = 1, pad: int = 1, threshold: bool = False
    ) -> str:
        n, c, oh, ow, window = self._window(x, k, stride, pad)
        ws = _signs(self.rng, (cout, c, k, k))
        scale = self.rng.uniform(0.5, 1.5, cout).astype(np.float32) / np.sqrt(c * k * k)
        b = self.rng.normal(0, 0.2, cout).astype(np.float32)
        t = self.rng.normal(0, 0.1, c).astype(np.float32) if threshold else None
        fields = {"weight_sign": ws, "scale": scale, "bias": b, "threshold": t}
        return self._node(ir.BinConv, "bconv", [x], (n, cout, oh, ow), **fields, **window)

    def clip(self, x: str, lo: float = -1.0, hi: float = 1.0) -> str:
        return self._node(ir.Clip, "clip", [x], self.shapes[x], min=lo, max=hi)

    def add(self, a: str, b: str) -> str:
        return self._node(ir.Add, "add", [a, b], self.shapes[a])

    def maxpool(self, x: str, k: int = 2, stride: int = 2, pad: int = 0) -> str:
        n, c, oh, ow, window = self._window(x, k, stride, pad)
        return self._node(ir.MaxPool, "maxpool", [x], (n, c, oh, ow), kernel=(k, k), **window)

    def head(self, x: str, classes: int = 10) -> str:
        n, c, h, w = self.shapes[x]
        gp = self._add(ir.GlobalAvgPool("gap", [x], "gap_out", (n, c, 1, 1)))
        fl = self._add(ir.Flatten("flatten", [gp], "flat_out", (n, c)))
        wt = self.rng.normal(0, np.sqrt(1 / c), (classes, c)).astype(np.float32)
        return self._add(
            ir.Gemm(
                "fc",
                [fl],
                "output",
                (n, classes),
                weight=wt,
                bias=self.rng.normal(0, 0.01, classes).astype(np.float32),
            )
        )

    def graph(self) -> ir.Graph:
        return ir.Graph("input", self.shapes["input"], self.last, self.nodes, self.shapes)


def small_bnn(seed: int = 0) -> ir.Graph:
    """Stem, a residual 64-channel block, a strided 64→128 and a 128→128 binary conv, head:
    the binary-conv paths daBNN has (64 channels unaligned, 128 aligned, stride 2)."""
    g = _G((1, 3, 16, 16), seed)
    x = g.clip(g.conv("input", 64))
    h = g.clip(g.binconv(x, 64))
    h = g.clip(g.add(g.binconv(h, 64), x))
    h = g.clip(g.binconv(h, 128, stride=2))
    h = g.clip(g.binconv(h, 128))
    g.head(h)
    return g.graph()


def _x(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    x[x == 0] = 1e-3
    return x


def _ir_out(graph: ir.Graph, x: np.ndarray, semantics: BinarySemantics) -> np.ndarray:
    return run_ir(graph, x, semantics)[graph.output]


# -- schema / format ---------------------------------------------------------------------


def test_schema_tables_match_the_fbs_file() -> None:
    parsed = schema.parse_fbs(schema.SCHEMA_PATH.read_text())
    assert tuple(parsed["enums"]["LayerType"]) == schema.LAYER_TYPES
    assert tuple(parsed["enums"]["DataType"]) == schema.DATA_TYPES
    tables = parsed["tables"]
    for ltype, fields in schema.PARAM_TABLES.items():
        assert tuple(tables[ltype]) == tuple(f for f, _ in fields), ltype
    assert tuple(tables["Layer"]) == schema.LAYER_FIELDS
    assert tuple(tables["Tensor"]) == schema.TENSOR_FIELDS
    assert tuple(tables["Input"]) == schema.INPUT_FIELDS
    assert tuple(tables["Model"]) == schema.MODEL_FIELDS
    assert set(schema.PARAM_FIELD.values()) == set(schema.LAYER_FIELDS) - {"type", "name"}


def test_bit_layout_channel_j_is_bit_j() -> None:
    w = _signs(np.random.default_rng(1), (2, 3, 3, 128))  # OHWI
    words, align = bits.pack_weights(w)
    assert align and words.dtype == np.uint64
    assert words.size == 2 * bits.words_per_filter(3, 3, 128) == 2 * 18
    word0 = int(words[0])
    assert [(word0 >> j) & 1 for j in range(64)] == [int(v > 0) for v in w[0, 0, 0, :64]]
    # the second word of the first tap holds channels 64..127
    assert [(int(words[1]) >> j) & 1 for j in range(64)] == [int(v > 0) for v in w[0, 0, 0, 64:]]
    # 64 input channels: no alignment, 9 words per 3×3 filter; 192: 27 words -> 28
    assert bits.pack_weights(_signs(np.random.default_rng(2), (1, 3, 3, 64)))[0].size == 9
    w192, a192 = bits.pack_weights(_signs(np.random.default_rng(3), (1, 3, 3, 192)))
    assert a192 and w192.size == 28 and int(w192[-1]) == 0


def test_written_file_parses_back_byte_identical_with_version_2(tmp_path: Path) -> None:
    g = small_bnn()
    summary = convert_dabnn(g, tmp_path / "m.dab", {"arch": "small"})
    data = (tmp_path / "m.dab").read_bytes()
    m = read_dab(data)
    assert m.version == 2 and summary["size_bytes"] == len(data)
    assert m.inputs[0].name == "input" and m.inputs[0].shape == (1, 16, 16, 3)
    assert dumps(m) == data  # every field the writer wrote was read back
    check_model(m)
    by_type = {t: m.count(t) for t in schema.LAYER_TYPES}
    assert by_type["BinConv2D"] == len(g.binary_convs()) == summary["n_binary_convs"] == 4
    assert by_type["FC"] == by_type["Softmax"] == by_type["Binarize"] == 0
    for layer in m.layers:
        if layer.type == "BinConv2D":
            w = m.tensor(layer.params["weight"])
            assert w.is_bit and w.align_hwc_to_128 == (w.shape[3] != 64)
            assert "bias" not in layer.params
            # every binary conv is followed by the Affine that turns mismatches into a dot
            nxt = m.layers[m.layers.index(layer) + 1]
            assert nxt.type == "Affine" and nxt.params["input"] == layer.output
    last = m.layers[-1]
    assert last.type == "FpConv2D" and m.tensor(last.params["weight"]).shape == (10, 1, 1, 128)


def test_reader_rejects_garbage_and_truncation(tmp_path: Path) -> None:
    convert_dabnn(small_bnn(), tmp_path / "m.dab", {})
    data = (tmp_path / "m.dab").read_bytes()
    for bad in (b"", b"\x00" * 7, data[: len(data) // 2], np.random.default_rng(0).bytes(4096)):
        with pytest.raises(DabFormatError):
            check_model(read_dab(bad))


def test_check_model_rejects_what_dabnn_rejects(tmp_path: Path) -> None:
    convert_dabnn(small_bnn(), tmp_path / "m.dab", {})
    m = read_dab(tmp_path / "m.dab")
    m.version = 1
    with pytest.raises(DabFormatError, match="version"):
        check_model(m)
    m = read_dab(tmp_path / "m.dab")
    m.layers.append(Layer("Softmax", {"input": m.output, "output": "prob"}, "softmax"))
    with pytest.raises(DabFormatError, match="rejects Softmax"):
        check_model(m)
    # a layer reading the Add's first operand after the Add overwrote that buffer in place
    m = read_dab(tmp_path / "m.dab")
    add = next(i for i, layer in enumerate(m.layers) if layer.type == "Add")
    nxt = m.layers[add + 1]
    assert nxt.params["input"] == m.layers[add].output
    nxt.params["input"] = m.layers[add].params["input1"]
    with pytest.raises(DabFormatError, match="overwrote"):
        check_model(m)


# -- the reference against the real runtime --------------------------------------------


@pytest.mark.parametrize("run", ["x86_64", "aarch64_qemu"])
def test_reference_matches_recorded_dabnn_runtime(run: str) -> None:
    """tests/data/dabnn/small_bnn.dab run by daBNN's own runtime (README.md there says how):
    the numpy reference must give the same numbers."""
    m = read_dab(DATA / "small_bnn.dab")
    check_model(m)
    x = np.load(DATA / "small_bnn_input_nhwc.npy")
    got = np.load(DATA / f"small_bnn_output_{run}.npy")
    y, _ = execute(m, x)
    assert np.abs(y.reshape(-1) - got.reshape(-1)).max() <= 1e-5 * np.abs(got).max()
    assert int(y.argmax()) == int(got.argmax())


# -- conversion semantics ----------------------------------------------------------------


def test_small_model_equals_ir_under_dabnn_semantics(tmp_path: Path) -> None:
    g = small_bnn()
    convert_dabnn(g, tmp_path / "m.dab", {})
    m = read_dab(tmp_path / "m.dab")
    for seed in range(3):
        x = _x(g.input_shape, seed)
        y = nhwc_to_ir(run_dab(m, x), g.shapes[g.output])
        ref = _ir_out(g, x, DABNN)
        assert np.abs(y - ref).max() <= 1e-4 * np.abs(ref).max()
    rep = verify_dabnn(None, tmp_path / "m.dab", g, n_inputs=2)
    assert rep["passed"] and rep["layerwise"]["checked"] >= 8, rep


def test_padding_minus_one_changes_exactly_the_border_by_the_padded_weights(tmp_path: Path) -> None:
    """daBNN's −1 padding: border outputs differ from zero padding by −scale·Σ(padded w)."""
    g = _G((1, 64, 6, 6), seed=4)
    g.binconv("input", 64, k=3, pad=1)
    graph = g.graph()
    node = graph.nodes[0]
    assert isinstance(node, ir.BinConv)
    convert_dabnn(graph, tmp_path / "m.dab", {})
    x = _x(graph.input_shape, 5)
    got = nhwc_to_ir(run_dab(read_dab(tmp_path / "m.dab"), x), graph.shapes[graph.output])
    zero = _ir_out(graph, x, FORMAT)
    # per output position and channel: the sum of the weights on padded taps
    padded_w = numpy_ops.conv2d(
        np.zeros((1, 64, 6, 6)), node.weight_sign.astype(np.float64), (1, 1), (1, 1, 1, 1), fill=1.0
    )
    expect = zero - node.scale.reshape(1, -1, 1, 1) * padded_w
    assert np.abs(got - expect).max() <= 1e-4 * np.abs(got).max()
    assert np.abs(got[..., 1:-1, 1:-1] - zero[..., 1:-1, 1:-1]).max() <= 1e-4 * np.abs(got).max()
    assert np.abs(got[..., 0, :] - zero[..., 0, :]).max() > 0.1  # the border does change


def test_fp_graph_with_clip_and_shared_value_is_exact(tmp_path: Path) -> None:
    """A clip whose input is also read later must not be computed in place: the converter
    copies, and the result equals the IR exactly (FP only, so no padding question)."""
    g = _G((1, 3, 8, 8), seed=6)
    x = g.conv("input", 16)
    c = g.clip(x, -0.5, 0.75)
    y = g.add(g.conv(c, 16), x)
    g.head(g.clip(y, 0.0, float("inf")))
    graph = g.graph()
    s = convert_dabnn(graph, tmp_path / "m.dab", {})
    assert s["extra_layers"].get("copy (1x1 MaxPool)") == 1
    m = read_dab(tmp_path / "m.dab")
    assert m.count("Relu") == 3  # two for the clip, one for the ReLU
    xx = _x(graph.input_shape, 7)
    y = nhwc_to_ir(run_dab(m, xx), graph.shapes[graph.output])
    ref = _ir_out(graph, xx, FORMAT)
    assert np.abs(y - ref).max() <= 1e-5 * np.abs(ref).max()


def test_sign_only_clips_are_dropped_and_clip_moves_after_max_pool(tmp_path: Path) -> None:
    g = _G((1, 3, 16, 16), seed=8)
    x = g.maxpool(g.clip(g.conv("input", 64)))  # clip moves after the pool, then computed
    h = g.binconv(g.clip(g.binconv(x, 64)), 64)  # this clip only feeds a binary conv
    g.head(g.clip(g.add(h, x)))
    graph = g.graph()
    s = convert_dabnn(graph, tmp_path / "m.dab", {})
    assert s["hardtanh"]["dropped (only its sign is used)"] == 1
    assert s["hardtanh"]["moved after max pool"] == 1
    assert s["hardtanh"]["computed exactly (Relu/Affine)"] == 2
    m = read_dab(tmp_path / "m.dab")
    types = [layer.type for layer in m.layers]
    assert types.index("MaxPool") < types.index("Relu")  # the clip runs on the pooled map
    assert m.count("Relu") == 4
    xx = _x(graph.input_shape, 9)
    y = nhwc_to_ir(run_dab(m, xx), graph.shapes[graph.output])
    ref = _ir_out(graph, xx, DABNN)
    assert np.abs(y - ref).max() <= 1e-4 * np.abs(ref).max()


# -- refusals ----------------------------------------------------------------------------


def test_binary_conv_input_channels_not_multiple_of_64_refused(tmp_path: Path) -> None:
    g = _G((1, 3, 8, 8))
    x = g.clip(g.conv("input", 32))
    g.head(g.binconv(x, 64))
    with pytest.raises(UnsupportedModelError) as ei:
        convert_dabnn(g.graph(), tmp_path / "m.dab", {})
    assert ei.value.node == "bconv2" and ei.value.op == "binconv"
    assert "multiple of 64" in str(ei.value) and "bconv2" in str(ei.value)
    assert not (tmp_path / "m.dab").exists()


def test_threshold_64ch_1x1_and_asymmetric_padding_refused(tmp_path: Path) -> None:
    cases = []
    g = _G((1, 64, 8, 8))
    g.head(g.binconv("input", 64, threshold=True))
    cases.append((g.graph(), "threshold"))
    g = _G((1, 64, 8, 8))
    g.head(g.binconv("input", 128, k=1, stride=2, pad=0))
    cases.append((g.graph(), "64 input channels with a kernel other than 3×3"))
    g = _G((1, 3, 8, 8))
    g.head(g.conv("input", 16))
    node = g.nodes[0]
    assert isinstance(node, ir.Conv)
    node.pads = (0, 0, 1, 1)
    node.out_shape = g.shapes[node.output] = (1, 16, 7, 7)
    g.nodes[1].out_shape = (1, 16, 1, 1)
    cases.append((g.graph(), "asymmetric padding"))
    for graph, why in cases:
        with pytest.raises(UnsupportedModelError, match=why) as ei:
            lower(graph)
        assert ei.value.node == graph.nodes[0].name


# -- the zoo -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def zoo_ir(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, ir.Graph]]:
    import onnx

    from converters import zoo
    from converters.frontend import load_ir

    d = tmp_path_factory.mktemp("dabnn_zoo")
    out = {}
    for arch, alg in (
        ("resnet18", "bnn"),
        ("resnet18", "fp32"),
        ("vggsmall", "bnn"),
        ("vggsmall", "react"),
    ):
        p = d / f"{arch}_{alg}.onnx"
        onnx.save(zoo.build_model(arch, alg), str(p))
        out[f"{arch}_{alg}"] = (p, load_ir(p))
    return out


@pytest.mark.slow  # the zoo
def test_resnet18_bnn_converts_and_verifies(zoo_ir: dict, tmp_path: Path) -> None:
    onnx_path, graph = zoo_ir["resnet18_bnn"]
    s = convert_dabnn(graph, tmp_path / "r18.dab", {"arch": "ResNet18", "algorithm": "bnn"})
    m = read_dab(tmp_path / "r18.dab")
    assert m.version == 2
    assert m.count("BinConv2D") == len(graph.binary_convs()) == s["n_binary_convs"] == 16
    assert m.count("FpConv2D") == 5  # stem, 3 downsamples, the classifier
    assert s["output"]["shape_nhwc"] == [1, 1, 1, 1000]
    assert s["padding"]["padded_binary_convs"] == 16
    assert s["hardtanh"]["dropped (only its sign is used)"] == 8
    json.dumps(s)
    rep = verify_dabnn(onnx_path, tmp_path / "r18.dab", graph, n_inputs=1)
    assert rep["passed"], rep["verdict"]
    assert rep["layerwise"]["checked"] >= 20
    # the zero vs −1 padding difference is real and reported, not hidden
    assert rep["vs_onnxruntime"]["max_rel_err"] > 1e-3


@pytest.mark.slow  # the zoo
def test_resnet18_fp32_matches_onnxruntime(zoo_ir: dict, tmp_path: Path) -> None:
    onnx_path, graph = zoo_ir["resnet18_fp32"]
    s = convert_dabnn(graph, tmp_path / "r18.dab", {})
    assert s["n_binary_convs"] == 0
    rep = verify_dabnn(onnx_path, tmp_path / "r18.dab", graph, n_inputs=1)
    assert rep["passed"]
    assert rep["vs_onnxruntime"]["max_rel_err"] < 1e-4  # no binary conv: no padding effect
    assert rep["vs_onnxruntime"]["top1_agreement"] == 1.0


@pytest.mark.slow  # the zoo
def test_vggsmall_bnn_converts_and_react_is_refused(zoo_ir: dict, tmp_path: Path) -> None:
    onnx_path, graph = zoo_ir["vggsmall_bnn"]
    s = convert_dabnn(graph, tmp_path / "vgg.dab", {})
    assert s["n_binary_convs"] == 5
    m = read_dab(tmp_path / "vgg.dab")
    # Flatten + Gemm over the 4×4×512 map: a 4×4 FpConv2D with NCHW-flatten order reordered
    assert m.tensor(m.layers[-1].params["weight"]).shape == (10, 4, 4, 512)
    assert verify_dabnn(onnx_path, tmp_path / "vgg.dab", graph, n_inputs=1)["passed"]
    _, react = zoo_ir["vggsmall_react"]
    with pytest.raises(UnsupportedModelError, match="threshold") as ei:
        convert_dabnn(react, tmp_path / "react.dab", {})
    assert ei.value.node == react.binary_convs()[0].name

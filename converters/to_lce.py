"""IR → Larq Compute Engine ``.tflite`` (binary models) and plain TFLite (FP32 models).

The IR is rebuilt as a tf-keras functional model in NHWC, in the form LCE's converter
recognises (larq_compute_engine/mlir/transforms/prepare_patterns_common.td):

* binary activation ``tf.where(x >= t, 1.0, -1.0)`` (t = 0, or ReAct's per-channel threshold,
  which LCE turns into ``LceQuantize(x − t)``); sign(0) = +1 as everywhere in bnnbench;
* binary conv: a ``Conv2D`` whose filter is a constant ±1 tensor, followed by the folded
  BatchNorm as a per-channel ``Mul`` and ``Add`` that LCE fuses into ``LceBconv2d``'s
  post-activation multiplier and bias. The scale is deliberately not put into the filter: LCE
  only accepts a filter ±scale[o] when |scale| > FLT_EPSILON and within 0.5 %, a separate Mul
  is fused just the same without those limits;
* FP32 convs, pooling, add, dense as plain Keras layers, weights transposed from OIHW.

Zero padding of binary convs (PyTorch semantics) — ``padding="exact"`` (default):

* pads equal to TF "SAME" → ``padding="same"``; LCE's SAME-zero path (arm target) adds its
  own exact correction for the padded taps;
* pads that are TF SAME mirrored (PyTorch stride 2, pad 1 on an even size: PyTorch reads one
  padded row on top, TF SAME one at the bottom) → the conv runs on the spatially reversed
  input with a reversed kernel, SAME-zero, and its output is reversed back: exactly PyTorch's
  result, for the cost of two ``REVERSE_V2`` ops;
* anything else is refused (:class:`UnsupportedModelError`) rather than silently changed.

``padding="one"`` pads binary convs with +1 instead (LCE's fast path, what Larq models use):
SAME-aligned pads become ``PadV2(value 1)`` → ``LceBconv2d`` SAME with ``pad_values=1``; other
pads an explicit pad of the float input (with a value that binarizes to +1) and VALID. Not an
exact conversion; docs/lce.md gives its measured effect. Explicit pads are always trimmed to
the rows/cols the conv actually reads: LCE fuses a Pad into a SAME conv whenever its before/
after split looks like SAME, without checking the total (so an untrimmed (1, 1) pad on a
stride-2 conv would silently become TF's (0, 1)).

After conversion the flatbuffer's ``LceBconv2d`` ops are counted; a binary conv LCE did not
convert (it would run as a float conv) makes the conversion fail.
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from converters import ir
from converters.errors import ConversionError, UnsupportedModelError
from converters.tflite_inspect import LCE_BCONV2D, TFLiteSummary, inspect_tflite

CONVERTER_NAME = "bnnbench-converters/lce"
CONVERTER_VERSION = "0.1.0"
PADDING_MODES = ("exact", "one")
BINARY_ACTIVATIONS = ("where", "larq_sign", "sign")
_OUTPUT_RE = re.compile(r"(?:^|[/;])n(\d{3})_")
_OWNER_RE = re.compile(r"(?:^|[/;])n(\d{3})x?_")
_F32_LOWEST = float(np.finfo(np.float32).min)  # max-pool padding: never the maximum


# ----------------------------------------------------------------------------- padding plans


@dataclass(frozen=True)
class AxisPads:
    before: int
    after: int  # trimmed: only what the op reads (can be less than the ONNX pad)
    same: tuple[int, int]  # TF "SAME" pads for this axis, or (-1, -1) if TF SAME's size differs


def axis_pads(size: int, kernel: int, stride: int, before: int, out: int) -> AxisPads:
    """Pads of one spatial axis: ``before`` as given, ``after`` reduced to the rows the
    op's last window reads, and what TF "SAME" would pad."""
    used = (out - 1) * stride + kernel  # rows spanned by the windows, padding included
    after = max(used - size - before, 0)
    if out == -(-size // stride):  # TF SAME output size is ceil(size / stride)
        total = max(used - size, 0)
        same = (total // 2, total - total // 2)
    else:
        same = (-1, -1)
    return AxisPads(before, after, same)


def _spatial_pads(n: ir.Node, in_shape: ir.Shape, kernel: tuple[int, int],
                  strides: tuple[int, int], pads: ir.Pads) -> tuple[AxisPads, AxisPads]:
    t, left, _b, _r = pads
    oh, ow = int(n.out_shape[2]), int(n.out_shape[3])
    return (axis_pads(int(in_shape[2]), kernel[0], strides[0], t, oh),
            axis_pads(int(in_shape[3]), kernel[1], strides[1], left, ow))


@dataclass(frozen=True)
class BconvPadding:
    """How one binary conv's padding is expressed for LCE (recorded in the summary)."""

    node: str
    onnx_pads: tuple[int, int, int, int]  # top, left, bottom, right as in the model
    read_pads: tuple[int, int, int, int]  # what the conv actually reads
    mapping: str  # valid | same-zero | same-zero-mirrored | same-one | explicit-one
    flip: tuple[bool, bool]  # (H, W) reversed around the conv
    exact: bool  # padded taps contribute 0, as in PyTorch


def plan_bconv_padding(node: ir.BinConv, in_shape: ir.Shape, mode: str = "exact"
                       ) -> BconvPadding:
    if mode not in PADDING_MODES:
        raise ValueError(f"padding mode {mode!r}; choose from {', '.join(PADDING_MODES)}")
    ah, aw = _spatial_pads(node, in_shape, node.kernel, node.strides, node.pads)
    read = (ah.before, aw.before, ah.after, aw.after)
    base = {"node": node.name, "onnx_pads": tuple(node.pads), "read_pads": read}
    if not any(read):
        return BconvPadding(**base, mapping="valid", flip=(False, False), exact=True)
    same_ok = [(a.before, a.after) == a.same for a in (ah, aw)]
    mirror_ok = [(a.after, a.before) == a.same for a in (ah, aw)]
    if mode == "exact":
        if all(s or m for s, m in zip(same_ok, mirror_ok, strict=True)):
            flip = (not same_ok[0], not same_ok[1])
            mapping = "same-zero-mirrored" if any(flip) else "same-zero"
            return BconvPadding(**base, mapping=mapping, flip=flip, exact=True)
        raise UnsupportedModelError(
            f"binary conv padding {list(node.pads)} (stride {list(node.strides)}, input "
            f"{list(in_shape[2:])}) is neither TF SAME nor mirrored SAME: LCE cannot express "
            "its zero padding exactly (convert with padding='one' to pad with +1 instead)",
            node.name, "Conv")
    if all(same_ok):
        return BconvPadding(**base, mapping="same-one", flip=(False, False), exact=False)
    return BconvPadding(**base, mapping="explicit-one", flip=(False, False), exact=False)


def plan_graph_padding(graph: ir.Graph, mode: str = "exact") -> list[BconvPadding]:
    return [plan_bconv_padding(n, graph.shapes[n.inputs[0]], mode) for n in graph.binary_convs()]


# ----------------------------------------------------------------------------- keras model


def import_tf() -> tuple[Any, Any]:
    """TensorFlow with the legacy tf-keras (what LCE's converter takes), quiet."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
        import tf_keras
    except ImportError as exc:
        raise ConversionError(f"LCE conversion needs tensorflow and tf-keras "
                              f"(pip install 'bnnbench[lce]'): {exc}") from exc
    if tf.keras.Model is not tf_keras.Model:
        raise ConversionError("TensorFlow was imported with Keras 3 before the LCE converter: "
                              "set TF_USE_LEGACY_KERAS=1 before anything imports tensorflow")
    return tf, tf_keras


def layer_name(index: int, what: str, final: bool = True) -> str:
    """Keras layer names carry the IR node index: the converted tensors' names then say which
    IR node they come from. ``final`` marks the layer that produces the node's output
    (``n012_clip``); helper layers before it are ``n012x_pad`` (verification reads the
    node outputs by these names, the bconv count check any of them)."""
    return f"n{index:03d}{'' if final else 'x'}_{what}"


def _hwio(w: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(np.asarray(w, np.float32), (2, 3, 1, 0)))


def flatten_order(graph: ir.Graph, n: ir.Flatten) -> str:
    """``hwc`` when the converted Flatten keeps NHWC order (all its consumers are Gemms, whose
    weight columns are permuted to match); ``chw`` (ONNX order) otherwise."""
    shape = graph.shapes[n.inputs[0]]
    if len(shape) != 4 or shape[2] * shape[3] == 1 or n.output == graph.output:
        return "chw"
    cons = [c for c in graph.nodes if n.output in c.inputs]
    return "hwc" if cons and all(isinstance(c, ir.Gemm) for c in cons) else "chw"


class _Builder:
    def __init__(self, graph: ir.Graph, padding: str, binary_activation: str) -> None:
        if binary_activation not in BINARY_ACTIVATIONS:
            raise ValueError(f"binary_activation {binary_activation!r}; choose from "
                             f"{', '.join(BINARY_ACTIVATIONS)}")
        self.tf, self.keras = import_tf()
        self.graph = graph
        self.padding = padding
        self.binary_activation = binary_activation
        # by node identity: ONNX node names need not be unique (or present)
        self.plans = {id(n): p for n, p in zip(graph.binary_convs(),
                                               plan_graph_padding(graph, padding), strict=True)}
        self.values: dict[str, Any] = {}
        self.hwc_flat: dict[str, tuple[int, int, int]] = {}  # flattened in NHWC order: (C,H,W)
        self.weights: list[tuple[Any, list[np.ndarray]]] = []
        consumers: dict[str, list[ir.Node]] = {}
        for n in graph.nodes:
            for i in n.inputs:
                consumers.setdefault(i, []).append(n)
        self.consumers = consumers

    # -- small helpers -------------------------------------------------------------------
    def op(self, fn: Any, name: str) -> Any:
        """A named Keras layer around a TF function (names survive into the flatbuffer)."""
        # straight-line TF calls: keep autograph from rewriting their source when traced
        return self.keras.layers.Lambda(self.tf.autograph.experimental.do_not_convert(fn),
                                        name=name)

    def binarize(self, x: Any, t: np.ndarray | None, i: int) -> Any:
        tf = self.tf
        thr = 0.0 if t is None else np.asarray(t, np.float32)
        if self.binary_activation == "where":
            def fn(v: Any) -> Any:
                return tf.where(v >= thr, 1.0, -1.0)
        elif self.binary_activation == "larq_sign":
            # larq's older ste_sign: sign(sign(x) + 0.1) maps 0 to +1; LCE matches this too
            def fn(v: Any) -> Any:
                return tf.sign(tf.sign(v - thr) + 0.1)
        else:  # plain sign, which LCE does not recognise (exists to test the bconv count)
            def fn(v: Any) -> Any:
                return tf.sign(v - thr)
        return self.op(fn, layer_name(i, "binarize", False))(x)

    def channel_affine(self, x: Any, scale: np.ndarray, bias: np.ndarray | None, i: int,
                       name: str, final: bool = True) -> Any:
        """``x · scale (+ bias)``. With a bias the Mul is a helper layer of its own and only
        the Add carries the node's output name: one Lambda holding both would name the Mul's
        tensor after the node too, and where the Add is fused into the next node's op (an
        Add with the following Clip as its fused activation, named after the Clip) that Mul
        tensor, x · scale without the bias, would pass for the node's output."""
        s = np.asarray(scale, np.float32)
        if bias is None:
            return self.op(lambda v: v * s, layer_name(i, name, final))(x)
        b = np.asarray(bias, np.float32)
        y = self.op(lambda v: v * s, layer_name(i, f"{name}_mul", False))(x)
        return self.op(lambda v: v + b, layer_name(i, name, final))(y)

    def pad(self, x: Any, hw: tuple[tuple[int, int], tuple[int, int]], value: float,
            i: int, what: str, final: bool = True) -> Any:
        tf = self.tf
        paddings = [[0, 0], list(hw[0]), list(hw[1]), [0, 0]]
        return self.op(lambda v: tf.pad(v, paddings, constant_values=value),
                       layer_name(i, what, final))(x)

    def reverse(self, x: Any, flip: tuple[bool, bool], i: int, what: str,
                final: bool = True) -> Any:
        axes = [a for a, f in zip((1, 2), flip, strict=True) if f]
        tf = self.tf
        return self.op(lambda v: tf.reverse(v, axis=axes), layer_name(i, what, final))(x)

    def conv_layer(self, filters: int, kernel: tuple[int, int], strides: tuple[int, int],
                   padding: str, use_bias: bool, name: str, weights: list[np.ndarray]) -> Any:
        layer = self.keras.layers.Conv2D(filters, kernel, strides=strides, padding=padding,
                                         use_bias=use_bias, name=name)
        self.weights.append((layer, weights))
        return layer

    # -- nodes ---------------------------------------------------------------------------
    def binconv(self, n: ir.BinConv, i: int) -> Any:
        x = self.values[n.inputs[0]]
        plan = self.plans[id(n)]
        w = np.asarray(n.weight_sign, np.float32)  # ±1, OIHW
        if plan.flip[0]:
            w = w[:, :, ::-1, :]
        if plan.flip[1]:
            w = w[:, :, :, ::-1]
        t, left, b, r = plan.read_pads
        if any(plan.flip):
            x = self.reverse(x, plan.flip, i, "reverse_in", False)
        if plan.mapping == "explicit-one":
            # pad the float input with a value that binarizes to +1 (x >= t for every t)
            v = 0.0 if n.threshold is None else max(float(np.max(n.threshold)), 0.0)
            x = self.pad(x, ((t, b), (left, r)), v, i, "pad_one", False)
        a = self.binarize(x, n.threshold, i)
        if plan.mapping == "same-one":
            # LCE turns PadV2(value 1) of the binarized input + VALID into SAME pad_values=1
            a = self.pad(a, ((t, b), (left, r)), 1.0, i, "pad_one", False)
        conv_padding = "same" if plan.mapping.startswith("same-zero") else "valid"
        conv = self.conv_layer(n.out_c, n.kernel, n.strides, conv_padding, False,
                               layer_name(i, "bconv", False), [_hwio(w)])
        y = self.channel_affine(conv(a), n.scale, n.bias, i, "scale_bias",
                                final=not any(plan.flip))
        if any(plan.flip):
            y = self.reverse(y, plan.flip, i, "reverse_out")
        return y

    def fp_padding(self, n: ir.Node, kernel: tuple[int, int], strides: tuple[int, int],
                   pads: ir.Pads) -> tuple[str, tuple[tuple[int, int], tuple[int, int]] | None]:
        ah, aw = _spatial_pads(n, self.graph.shapes[n.inputs[0]], kernel, strides, pads)
        if not any((ah.before, ah.after, aw.before, aw.after)):
            return "valid", None
        if (ah.before, ah.after) == ah.same and (aw.before, aw.after) == aw.same:
            return "same", None
        return "valid", ((ah.before, ah.after), (aw.before, aw.after))

    def conv(self, n: ir.Conv, i: int) -> Any:
        x = self.values[n.inputs[0]]
        padding, explicit = self.fp_padding(n, n.kernel, n.strides, n.pads)
        if explicit is not None:
            x = self.pad(x, explicit, 0.0, i, "pad", False)
        weights = [_hwio(n.weight)]
        if n.bias is not None:
            weights.append(np.asarray(n.bias, np.float32))
        return self.conv_layer(n.out_c, n.kernel, n.strides, padding, n.bias is not None,
                               layer_name(i, "conv"), weights)(x)

    def maxpool(self, n: ir.MaxPool, i: int) -> Any:
        x = self.values[n.inputs[0]]
        padding, explicit = self.fp_padding(n, n.kernel, n.strides, n.pads)
        if explicit is not None:
            x = self.pad(x, explicit, _F32_LOWEST, i, "pad", False)
        return self.keras.layers.MaxPooling2D(n.kernel, n.strides, padding=padding,
                                              name=layer_name(i, "maxpool"))(x)

    def avgpool(self, n: ir.AvgPool, i: int) -> Any:
        x = self.values[n.inputs[0]]
        padding, explicit = self.fp_padding(n, n.kernel, n.strides, n.pads)
        if padding == "same" and n.count_include_pad:
            # TF SAME leaves padding out of the count: pad zeros explicitly instead
            ah, aw = _spatial_pads(n, self.graph.shapes[n.inputs[0]], n.kernel, n.strides,
                                   n.pads)
            explicit = ((ah.before, ah.after), (aw.before, aw.after))
        if explicit is not None:
            if not n.count_include_pad:
                raise UnsupportedModelError(
                    f"average pool with pads {list(n.pads)} that exclude padding from the "
                    "count and are not TF SAME: no TFLite equivalent", n.name, "AveragePool")
            x = self.pad(x, explicit, 0.0, i, "pad", False)
            padding = "valid"
        return self.keras.layers.AveragePooling2D(n.kernel, n.strides, padding=padding,
                                                  name=layer_name(i, "avgpool"))(x)

    def flatten(self, n: ir.Flatten, i: int) -> Any:
        x = self.values[n.inputs[0]]
        shape = self.graph.shapes[n.inputs[0]]
        tf = self.tf
        if flatten_order(self.graph, n) == "hwc":
            # the Gemm's weight columns are permuted instead: no transpose at run time
            self.hwc_flat[n.output] = (int(shape[1]), int(shape[2]), int(shape[3]))
        elif len(shape) == 4 and shape[2] * shape[3] > 1:
            x = self.op(lambda v: tf.transpose(v, [0, 3, 1, 2]),
                        layer_name(i, "nchw", False))(x)
        return self.keras.layers.Flatten(name=layer_name(i, "flatten"))(x)

    def gemm(self, n: ir.Gemm, i: int) -> Any:
        x = self.values[n.inputs[0]]
        w = np.asarray(n.weight, np.float32)  # (out, in)
        if n.inputs[0] in self.hwc_flat:
            c, h, wd = self.hwc_flat[n.inputs[0]]
            w = w.reshape(-1, c, h, wd).transpose(0, 2, 3, 1).reshape(w.shape[0], -1)
        layer = self.keras.layers.Dense(w.shape[0], use_bias=n.bias is not None,
                                        name=layer_name(i, "dense"))
        self.weights.append((layer, [np.ascontiguousarray(w.T)]
                             + ([np.asarray(n.bias, np.float32)] if n.bias is not None else [])))
        return layer(x)

    def node(self, n: ir.Node, i: int) -> Any:
        tf = self.tf
        if isinstance(n, ir.BinConv):
            return self.binconv(n, i)
        if isinstance(n, ir.Conv):
            return self.conv(n, i)
        x = self.values[n.inputs[0]]
        if isinstance(n, ir.Affine):
            return self.channel_affine(x, n.scale, n.bias, i, "affine")
        if isinstance(n, ir.Clip):
            lo, hi = float(n.min), float(n.max)
            return self.op(lambda v: tf.clip_by_value(v, lo, hi), layer_name(i, "clip"))(x)
        if isinstance(n, ir.MaxPool):
            return self.maxpool(n, i)
        if isinstance(n, ir.AvgPool):
            return self.avgpool(n, i)
        if isinstance(n, ir.GlobalAvgPool):
            return self.keras.layers.GlobalAveragePooling2D(keepdims=True,
                                                            name=layer_name(i, "gap"))(x)
        if isinstance(n, ir.Add):
            return self.keras.layers.Add(name=layer_name(i, "add"))(
                [x, self.values[n.inputs[1]]])
        if isinstance(n, ir.Flatten):
            return self.flatten(n, i)
        if isinstance(n, ir.Gemm):
            return self.gemm(n, i)
        raise UnsupportedModelError(f"IR node of kind {n.kind} has no LCE mapping", n.name)

    def build(self) -> Any:
        shape = tuple(int(d) for d in self.graph.input_shape)
        if len(shape) != 4:
            raise UnsupportedModelError(f"input shape {list(shape)}: LCE models take NCHW "
                                        "images (converted to NHWC)")
        n_, c, h, w = shape
        inp = self.keras.Input((h, w, c), batch_size=n_, name="input")
        self.values[self.graph.input] = inp
        for i, n in enumerate(self.graph.nodes):
            if isinstance(n, ir.BinConv | ir.Conv) and len(self.graph.shapes[n.inputs[0]]) != 4:
                raise UnsupportedModelError("conv on a non-image tensor", n.name)
            self.values[n.output] = self.node(n, i)
        model = self.keras.Model(inp, self.values[self.graph.output])
        for layer, weights in self.weights:
            layer.set_weights(weights)
        return model


def build_keras_model(graph: ir.Graph, padding: str = "exact",
                      binary_activation: str = "where") -> Any:
    """The tf-keras model (NHWC) that LCE converts; see the module docstring."""
    return _Builder(graph, padding, binary_activation).build()


# ----------------------------------------------------------------------------- conversion


def versions() -> dict[str, str]:
    from importlib import metadata

    out = {"bnnbench": CONVERTER_VERSION}
    for dist in ("larq-compute-engine", "tensorflow", "tf-keras"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def _concrete_function(model: Any) -> Any:
    """The model's forward pass traced once, with autograph off: Keras would otherwise
    rewrite every layer's Python source (≈15 s for VGG-Small, 30 s for ResNet-18); the layers
    are straight-line TF calls that need no conversion."""
    tf, _ = import_tf()
    spec = tf.TensorSpec(model.inputs[0].shape, tf.float32, name="input")
    fn = tf.function(lambda x: model(x, training=False), autograph=False)
    return fn.get_concrete_function(spec)


def _lce_convert(model: Any) -> bytes:
    """LCE's converter on the frozen graph of ``model`` (target arm, float in/out).

    This is the graph-def path of ``lce.convert_keras_model`` (what it falls back to when the
    SavedModel export fails, as it does for Lambda layers), fed with the autograph-free trace;
    if LCE's internals differ from 0.16's, the public entry point is used instead."""
    tf, _ = import_tf()
    import larq_compute_engine as lce

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras' trace-time chatter, not about the model
        tf.get_logger().setLevel("ERROR")
        try:
            from larq_compute_engine.mlir._tf_tfl_flatbuffer import (
                convert_graphdef_to_tflite_flatbuffer,
            )
            from tensorflow.core.framework.types_pb2 import DataType
            from tensorflow.lite.python.util import get_tensor_name
            from tensorflow.python.framework.convert_to_constants import (
                convert_variables_to_constants_v2,
            )
        except ImportError:
            return bytes(lce.convert_keras_model(model, inference_input_type=tf.float32,
                                                 inference_output_type=tf.float32,
                                                 target="arm"))
        frozen = convert_variables_to_constants_v2(_concrete_function(model),
                                                   lower_control_flow=False)
        inputs = [t for t in frozen.inputs if t.dtype != tf.dtypes.resource]
        return bytes(convert_graphdef_to_tflite_flatbuffer(
            frozen.graph.as_graph_def().SerializeToString(),
            [get_tensor_name(t) for t in inputs],
            [DataType.Name(t.dtype.as_datatype_enum) for t in inputs],
            [t.shape.as_list() for t in inputs],
            [get_tensor_name(t) for t in frozen.outputs],
            False,  # no training-time quantization ops: float model
            "arm",
            None,
        ))


def tensor_owner(name: str, outputs_only: bool = True) -> int | None:
    """IR node index whose output a converted tensor holds, from our layer names in it
    (``outputs_only=False``: any node the tensor belongs to, helper layers included).

    A fused op's tensor is named after the TF ops fused into it (``;``-separated, cut at some
    length): the last IR node among them is the one whose output the tensor holds."""
    rx = _OUTPUT_RE if outputs_only else _OWNER_RE
    found = [int(m) for m in rx.findall(name)]
    return max(found) if found else None


def check_bconv_count(graph: ir.Graph, flatbuffer: bytes | TFLiteSummary) -> int:
    """Raise :class:`UnsupportedModelError` unless every binary conv became ``LceBconv2d``.

    A binary conv that LCE did not match stays a float ``CONV_2D``: correct numbers, but no
    binary kernel, so its timings would be reported as binary ones wrongly."""
    summary = flatbuffer if isinstance(flatbuffer, TFLiteSummary) else inspect_tflite(flatbuffer)
    bins = graph.binary_convs()
    got = summary.count(LCE_BCONV2D)
    if got == len(bins):
        return got
    index = {id(n): i for i, n in enumerate(graph.nodes)}
    converted = {tensor_owner(nm, outputs_only=False) for o in summary.operators
                 if o.op == LCE_BCONV2D for nm in o.output_names}
    missing = [n.name for n in bins if index[id(n)] not in converted]
    if len(missing) != len(bins) - got:  # names unavailable: report the count only
        missing = missing or ["(names not recoverable from the flatbuffer)"]
    k = len(bins) - got
    raise UnsupportedModelError(
        f"{k} of {len(bins)} binarized convs were not converted to {LCE_BCONV2D}: "
        f"{', '.join(missing[:8])}{' …' if len(missing) > 8 else ''}" if k > 0 else
        f"the flatbuffer has {got} {LCE_BCONV2D} ops for {len(bins)} binarized convs")


def _release(model: Any) -> None:
    """Drop Keras' global graph state: a conversion worker converts many models in one
    process."""
    del model
    _, keras = import_tf()
    keras.backend.clear_session()


def _write_atomic(data: bytes, out_path: str | Path) -> Path:
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)  # never a half-written artifact under the final name
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _summary(library: str, graph: ir.Graph, data: bytes, out: Path, meta: dict,
             fb: TFLiteSummary, padding: str, plans: list[BconvPadding]) -> dict[str, Any]:
    n_, c, h, w = (int(d) for d in graph.input_shape)
    return {
        "library": library,
        "output": str(out),
        "size_bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "n_binary_convs": len(graph.binary_convs()),
        "n_lce_bconv2d": fb.count(LCE_BCONV2D),
        # what padded taps of binary convs contribute: 0 as in PyTorch ("zero"), or +1
        "padding_mode": "zero" if padding == "exact" else "one",
        "padding": [asdict(p) for p in plans],
        "op_counts": fb.op_counts,
        "custom_ops": fb.custom_ops,
        "input_shape": [n_, h, w, c],
        "input_layout": "NHWC",
        "output_shape": fb.output_shapes[0] if fb.output_shapes else [],
        "converter": CONVERTER_NAME,
        "converter_versions": versions(),
        "metadata": dict(meta),
    }


def convert_lce(graph: ir.Graph, out_path: str | Path, meta: dict, *, padding: str = "exact",
                binary_activation: str = "where") -> dict[str, Any]:
    """Convert the IR with LCE's converter (target arm) and write the ``.tflite`` atomically.

    FP32 graphs go through the same converter (plain TFLite ops, no LCE ops), so a binary
    model and its FP32 baseline share one toolchain. ``binary_activation`` is "where" (the
    default), "larq_sign" (larq's other recognised form) or "sign" (plain ``tf.sign``, which
    LCE does not recognise: only useful to see the bconv count check refuse it)."""
    plans = plan_graph_padding(graph, padding)
    model = build_keras_model(graph, padding, binary_activation)
    try:
        data = _lce_convert(model)
    except ConversionError:
        raise
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ConversionError(f"LCE converter failed: {type(exc).__name__}: {first}") from exc
    finally:
        _release(model)
    fb = inspect_tflite(data)
    check_bconv_count(graph, fb)
    out = _write_atomic(data, out_path)
    return _summary("lce", graph, data, out, meta, fb, padding, plans)


def convert_tflite(graph: ir.Graph, out_path: str | Path, meta: dict) -> dict[str, Any]:
    """FP32 model → plain TFLite (builtin ops only) for tflite-runtime.

    Made by the same converter as the LCE artifacts (TF 2.16's MLIR converter inside LCE;
    its LCE passes change nothing in a graph without binary activations), so the FP32
    baseline is the same file for both libraries; ``tf.lite.TFLiteConverter`` would give the
    same ops at a much higher first-call cost. Binary convs are refused: tflite-runtime has
    no binary kernels (use library "lce")."""
    bins = graph.binary_convs()
    if bins:
        raise UnsupportedModelError(
            f"tflite-runtime has no binary kernels: {len(bins)} binarized convs (first "
            f"{bins[0].name!r}); convert this model for library 'lce'")
    model = build_keras_model(graph)
    try:
        data = _lce_convert(model)
    except Exception as exc:
        raise ConversionError(f"TFLite conversion failed: {type(exc).__name__}: {exc}") from exc
    finally:
        _release(model)
    fb = inspect_tflite(data)
    if fb.custom_ops:  # tflite-runtime could not load it
        raise ConversionError(f"TFLite conversion produced custom ops {fb.custom_ops}")
    out = _write_atomic(data, out_path)
    summary = _summary("tflite", graph, data, out, meta, fb, "exact", [])
    summary["converter"] = "bnnbench-converters/tflite"
    return summary

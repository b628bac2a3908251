"""The IR as a tf-keras functional model in NHWC, in the form LCE's converter recognises
(larq_compute_engine/mlir/transforms/prepare_patterns_common.td):

* binary activation ``tf.where(x >= t, 1.0, -1.0)`` (t = 0, or ReAct's per-channel threshold,
  which LCE turns into ``LceQuantize(x − t)``); sign(0) = +1 as everywhere in bnnbench;
* binary conv: a ``Conv2D`` whose filter is a constant ±1 tensor, followed by the folded
  BatchNorm as a per-channel ``Mul`` and ``Add`` that LCE fuses into ``LceBconv2d``'s
  post-activation multiplier and bias. The scale is deliberately not put into the filter: LCE
  only accepts a filter ±scale[o] when |scale| > FLT_EPSILON and within 0.5 %, a separate Mul
  is fused just the same without those limits; its padding as planned in padding.py;
* FP32 convs, pooling, add, dense as plain Keras layers, weights transposed from OIHW.

Keras layer names carry the IR node index (:func:`layer_name`), so the converted tensors say
which IR node they hold (:func:`tensor_owner`): the bconv count check and the layer-wise
verification read them.
"""

from __future__ import annotations

import os
import re
from typing import Any

import numpy as np

from converters import ir
from converters.backends.lce.padding import plan_graph_padding, spatial_pads
from converters.errors import ConversionError, UnsupportedModelError

BINARY_ACTIVATIONS = ("where", "larq_sign", "sign")
_OUTPUT_RE = re.compile(r"(?:^|[/;])n(\d{3})_")
_OWNER_RE = re.compile(r"(?:^|[/;])n(\d{3})x?_")
_F32_LOWEST = float(np.finfo(np.float32).min)  # max-pool padding: never the maximum


def import_tf() -> tuple[Any, Any]:
    """TensorFlow with the legacy tf-keras (what LCE's converter takes), quiet."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
        import tf_keras
    except ImportError as exc:
        raise ConversionError(
            f"LCE conversion needs tensorflow and tf-keras (pip install 'bnnbench[lce]'): {exc}"
        ) from exc
    if tf.keras.Model is not tf_keras.Model:
        raise ConversionError(
            "TensorFlow was imported with Keras 3 before the LCE converter: "
            "set TF_USE_LEGACY_KERAS=1 before anything imports tensorflow"
        )
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
            raise ValueError(
                f"binary_activation {binary_activation!r}; choose from "
                f"{', '.join(BINARY_ACTIVATIONS)}"
            )
        self.tf, self.keras = import_tf()
        self.graph = graph
        self.padding = padding
        self.binary_activation = binary_activation
        # by node identity: ONNX node names need not be unique (or present)
        self.plans = {
            id(n): p
            for n, p in zip(graph.binary_convs(), plan_graph_padding(graph, padding), strict=True)
        }
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
        return self.keras.layers.Lambda(
            self.tf.autograph.experimental.do_not_convert(fn), name=name
        )

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

    def channel_affine(
        self,
        x: Any,
        scale: np.ndarray,
        bias: np.ndarray | None,
        i: int,
        name: str,
        final: bool = True,
    ) -> Any:
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

    def pad(
        self,
        x: Any,
        hw: tuple[tuple[int, int], tuple[int, int]],
        value: float,
        i: int,
        what: str,
        final: bool = True,
    ) -> Any:
        tf = self.tf
        paddings = [[0, 0], list(hw[0]), list(hw[1]), [0, 0]]
        return self.op(
            lambda v: tf.pad(v, paddings, constant_values=value), layer_name(i, what, final)
        )(x)

    def reverse(
        self, x: Any, flip: tuple[bool, bool], i: int, what: str, final: bool = True
    ) -> Any:
        axes = [a for a, f in zip((1, 2), flip, strict=True) if f]
        tf = self.tf
        return self.op(lambda v: tf.reverse(v, axis=axes), layer_name(i, what, final))(x)

    def conv_layer(
        self,
        filters: int,
        kernel: tuple[int, int],
        strides: tuple[int, int],
        padding: str,
        use_bias: bool,
        name: str,
        weights: list[np.ndarray],
    ) -> Any:
        layer = self.keras.layers.Conv2D(
            filters, kernel, strides=strides, padding=padding, use_bias=use_bias, name=name
        )
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
        conv = self.conv_layer(
            n.out_c,
            n.kernel,
            n.strides,
            conv_padding,
            False,
            layer_name(i, "bconv", False),
            [_hwio(w)],
        )
        y = self.channel_affine(conv(a), n.scale, n.bias, i, "scale_bias", final=not any(plan.flip))
        if any(plan.flip):
            y = self.reverse(y, plan.flip, i, "reverse_out")
        return y

    def fp_padding(
        self, n: ir.Node, kernel: tuple[int, int], strides: tuple[int, int], pads: ir.Pads
    ) -> tuple[str, tuple[tuple[int, int], tuple[int, int]] | None]:
        ah, aw = spatial_pads(n, self.graph.shapes[n.inputs[0]], kernel, strides, pads)
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
        return self.conv_layer(
            n.out_c,
            n.kernel,
            n.strides,
            padding,
            n.bias is not None,
            layer_name(i, "conv"),
            weights,
        )(x)

    def maxpool(self, n: ir.MaxPool, i: int) -> Any:
        x = self.values[n.inputs[0]]
        padding, explicit = self.fp_padding(n, n.kernel, n.strides, n.pads)
        if explicit is not None:
            x = self.pad(x, explicit, _F32_LOWEST, i, "pad", False)
        return self.keras.layers.MaxPooling2D(
            n.kernel, n.strides, padding=padding, name=layer_name(i, "maxpool")
        )(x)

    def avgpool(self, n: ir.AvgPool, i: int) -> Any:
        x = self.values[n.inputs[0]]
        padding, explicit = self.fp_padding(n, n.kernel, n.strides, n.pads)
        if padding == "same" and n.count_include_pad:
            # TF SAME leaves padding out of the count: pad zeros explicitly instead
            ah, aw = spatial_pads(n, self.graph.shapes[n.inputs[0]], n.kernel, n.strides, n.pads)
            explicit = ((ah.before, ah.after), (aw.before, aw.after))
        if explicit is not None:
            if not n.count_include_pad:
                raise UnsupportedModelError(
                    f"average pool with pads {list(n.pads)} that exclude padding from the "
                    "count and are not TF SAME: no TFLite equivalent",
                    n.name,
                    "AveragePool",
                )
            x = self.pad(x, explicit, 0.0, i, "pad", False)
            padding = "valid"
        return self.keras.layers.AveragePooling2D(
            n.kernel, n.strides, padding=padding, name=layer_name(i, "avgpool")
        )(x)

    def flatten(self, n: ir.Flatten, i: int) -> Any:
        x = self.values[n.inputs[0]]
        shape = self.graph.shapes[n.inputs[0]]
        tf = self.tf
        if flatten_order(self.graph, n) == "hwc":
            # the Gemm's weight columns are permuted instead: no transpose at run time
            self.hwc_flat[n.output] = (int(shape[1]), int(shape[2]), int(shape[3]))
        elif len(shape) == 4 and shape[2] * shape[3] > 1:
            x = self.op(lambda v: tf.transpose(v, [0, 3, 1, 2]), layer_name(i, "nchw", False))(x)
        return self.keras.layers.Flatten(name=layer_name(i, "flatten"))(x)

    def gemm(self, n: ir.Gemm, i: int) -> Any:
        x = self.values[n.inputs[0]]
        w = np.asarray(n.weight, np.float32)  # (out, in)
        if n.inputs[0] in self.hwc_flat:
            c, h, wd = self.hwc_flat[n.inputs[0]]
            w = w.reshape(-1, c, h, wd).transpose(0, 2, 3, 1).reshape(w.shape[0], -1)
        layer = self.keras.layers.Dense(
            w.shape[0], use_bias=n.bias is not None, name=layer_name(i, "dense")
        )
        self.weights.append(
            (
                layer,
                [np.ascontiguousarray(w.T)]
                + ([np.asarray(n.bias, np.float32)] if n.bias is not None else []),
            )
        )
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
            return self.keras.layers.GlobalAveragePooling2D(
                keepdims=True, name=layer_name(i, "gap")
            )(x)
        if isinstance(n, ir.Add):
            return self.keras.layers.Add(name=layer_name(i, "add"))([x, self.values[n.inputs[1]]])
        if isinstance(n, ir.Flatten):
            return self.flatten(n, i)
        if isinstance(n, ir.Gemm):
            return self.gemm(n, i)
        raise UnsupportedModelError(f"IR node of kind {n.kind} has no LCE mapping", n.name)

    def build(self) -> Any:
        shape = tuple(int(d) for d in self.graph.input_shape)
        if len(shape) != 4:
            raise UnsupportedModelError(
                f"input shape {list(shape)}: LCE models take NCHW images (converted to NHWC)"
            )
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


def build_keras_model(
    graph: ir.Graph, padding: str = "exact", binary_activation: str = "where"
) -> Any:
    """The tf-keras model (NHWC) that LCE converts; see the module docstring."""
    return _Builder(graph, padding, binary_activation).build()


def tensor_owner(name: str, outputs_only: bool = True) -> int | None:
    """IR node index whose output a converted tensor holds, from our layer names in it
    (``outputs_only=False``: any node the tensor belongs to, helper layers included).

    A fused op's tensor is named after the TF ops fused into it (``;``-separated, cut at some
    length): the last IR node among them is the one whose output the tensor holds."""
    rx = _OUTPUT_RE if outputs_only else _OWNER_RE
    found = [int(m) for m in rx.findall(name)]
    return max(found) if found else None

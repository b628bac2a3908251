"""A slow, plain-numpy interpreter of native models (FORMAT.md semantics) and of the IR.

It is the converter's own check that what it writes means what the ONNX model means, usable
without the C engine (tests, and verification on machines where the engine is not built), and
a second opinion when the engine and onnxruntime disagree. Native layers and IR nodes are the
same op classes (native/format.py), so one dispatcher runs both, with the operators of
converters/numpy_ops.py.

Binary convs follow the format by default (:data:`FORMAT`: sign(0) = +1, padded taps
contribute 0, ``y = scale·dot + bias``); the other libraries' semantics are parameters:
:data:`DABNN` (bit = x > 0, padded taps −1; see converters/backends/dabnn/reference.py) and
:data:`PAD_ONE` (LCE's ``padding="one"``: padded taps +1).
"""

from __future__ import annotations

import numpy as np

from converters import ir
from converters import numpy_ops as ops
from converters.numpy_ops import BinarySemantics
from native import format as nf

FORMAT = BinarySemantics(zero_sign=1.0, pad_value=0.0)  # FORMAT.md, the IR, the ONNX model
DABNN = BinarySemantics(zero_sign=-1.0, pad_value=-1.0)  # daBNN's BinConv2D
PAD_ONE = BinarySemantics(zero_sign=1.0, pad_value=1.0)  # LCE with padding="one"


def run_layer(
    layer: nf.OpParams, ins: list[np.ndarray], semantics: BinarySemantics = FORMAT
) -> np.ndarray:
    """One op — a native layer or an IR node, which share their op classes — on its input
    values (NCHW, or N×F after a flatten)."""
    x = ins[0]
    if isinstance(layer, nf.Conv2dF32Params):
        return ops.conv2d_f32(x, layer.weight, layer.bias, layer.strides, layer.pads)
    if isinstance(layer, nf.Conv2dBinParams):
        return ops.binary_conv(
            x,
            layer.weight_sign,
            layer.strides,
            layer.pads,
            threshold=layer.threshold,
            scale=layer.scale,
            bias=layer.bias,
            semantics=semantics,
        )
    if isinstance(layer, nf.AffineParams):
        return ops.affine(x, layer.scale, layer.bias)
    if isinstance(layer, nf.ClipParams):
        return ops.clip(x, layer.min, layer.max)
    if isinstance(layer, nf.MaxPoolParams):
        return ops.max_pool(x, layer.kernel, layer.strides, layer.pads)
    if isinstance(layer, nf.AvgPoolParams):
        return ops.avg_pool(x, layer.kernel, layer.strides, layer.pads, layer.count_include_pad)
    if isinstance(layer, nf.GlobalAvgPoolParams):
        return ops.global_avg_pool(x)
    if isinstance(layer, nf.AddParams):
        return ops.add(ins[0], ins[1])
    if isinstance(layer, nf.FlattenParams):
        return ops.flatten(x)
    if isinstance(layer, nf.GemmParams):
        return ops.gemm(x, layer.weight, layer.bias)
    if isinstance(layer, ir.Node):
        raise TypeError(f"IR node {layer.name!r} of kind {layer.kind}")
    raise nf.FormatError(f"reference: unknown layer {type(layer).__name__}")


def run_values(model: nf.NativeModel | bytes, x: np.ndarray) -> dict[int, np.ndarray]:
    """Every value of a native model (by value id) for one input."""
    if isinstance(model, bytes | bytearray):
        model = nf.loads(bytes(model))
    values: dict[int, np.ndarray] = {model.input_id: np.asarray(x, np.float32)}
    for layer in model.layers:
        values[layer.output] = run_layer(layer, [values[i] for i in layer.inputs])
    return values


def run(model: nf.NativeModel | bytes, x: np.ndarray) -> np.ndarray:
    """A native model's output for one input."""
    if isinstance(model, bytes | bytearray):
        model = nf.loads(bytes(model))
    return run_values(model, x)[model.output_id]


def run_ir(
    graph: ir.Graph, x: np.ndarray, semantics: BinarySemantics = FORMAT
) -> dict[str, np.ndarray]:
    """Every IR value (by name) for one NCHW input, binary convs under ``semantics``."""
    vals = {graph.input: np.asarray(x, np.float32)}
    for n in graph.nodes:
        vals[n.output] = run_layer(n, [vals[i] for i in n.inputs], semantics)
    return vals

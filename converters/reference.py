"""A slow, plain-numpy interpreter of native models (FORMAT.md semantics).

It is the converter's own check that what it writes means what the ONNX model means, usable
without the C engine (tests, and verification on machines where the engine is not built), and
a second opinion when the engine and onnxruntime disagree. Binary convs follow the format
exactly: sign(0) = +1, padded taps contribute 0, ``y = scale·dot + bias``.
"""

from __future__ import annotations

import numpy as np

from native import format as nf


def _windows(x: np.ndarray, kernel: tuple[int, int], strides: tuple[int, int],
             pads: tuple[int, int, int, int], fill: float) -> np.ndarray:
    """N, C, kh, kw, OH, OW view of the padded input."""
    t, left, b, r = pads
    xp = np.pad(x, ((0, 0), (0, 0), (t, b), (left, r)), constant_values=fill)
    n, c, h, w = xp.shape
    oh = (h - kernel[0]) // strides[0] + 1
    ow = (w - kernel[1]) // strides[1] + 1
    s = xp.strides
    return np.lib.stride_tricks.as_strided(
        xp, (n, c, kernel[0], kernel[1], oh, ow),
        (s[0], s[1], s[2], s[3], s[2] * strides[0], s[3] * strides[1]), writeable=False,
    )


def _conv(x: np.ndarray, w: np.ndarray, strides: tuple[int, int],
          pads: tuple[int, int, int, int]) -> np.ndarray:
    o, c, kh, kw = w.shape
    win = _windows(x.astype(np.float64), (kh, kw), strides, pads, 0.0)
    n, _, _, _, oh, ow = win.shape
    cols = win.reshape(n, c * kh * kw, oh * ow)
    return (w.reshape(o, -1).astype(np.float64) @ cols).reshape(n, o, oh, ow)


def run_layer(layer: nf.Layer, ins: list[np.ndarray]) -> np.ndarray:
    x = ins[0]
    if isinstance(layer, nf.Conv2dF32):
        y = _conv(x, layer.weight, layer.strides, layer.pads)
        if layer.bias is not None:
            y += layer.bias.reshape(1, -1, 1, 1)
        return y.astype(np.float32)
    if isinstance(layer, nf.Conv2dBin):
        o = layer.weight_sign.shape[0]
        v = x if layer.threshold is None else x - layer.threshold.reshape(1, -1, 1, 1)
        a = np.where(v >= 0, 1.0, -1.0)  # sign(0) = +1
        dot = _conv(a, np.asarray(layer.weight_sign, np.float64), layer.strides, layer.pads)
        scale = np.ones(o, np.float32) if layer.scale is None else layer.scale
        bias = np.zeros(o, np.float32) if layer.bias is None else layer.bias
        return (dot.astype(np.float32) * scale.reshape(1, -1, 1, 1)
                + bias.reshape(1, -1, 1, 1)).astype(np.float32)
    if isinstance(layer, nf.Affine):
        return (x * layer.scale.reshape(1, -1, 1, 1) + layer.bias.reshape(1, -1, 1, 1)).astype(
            np.float32
        )
    if isinstance(layer, nf.Clip):
        return np.clip(x, layer.min, layer.max).astype(np.float32)
    if isinstance(layer, nf.MaxPool):
        return _windows(x, layer.kernel, layer.strides, layer.pads, -np.inf).max(axis=(2, 3))
    if isinstance(layer, nf.AvgPool):
        win = _windows(x.astype(np.float64), layer.kernel, layer.strides, layer.pads, 0.0)
        total = win.sum(axis=(2, 3))
        if layer.count_include_pad:
            count = np.full(total.shape[2:], layer.kernel[0] * layer.kernel[1], np.float64)
        else:
            ones = np.ones((1, 1) + x.shape[2:])
            count = _windows(ones, layer.kernel, layer.strides, layer.pads, 0.0).sum(
                axis=(2, 3)
            )[0, 0]
        return (total / count).astype(np.float32)
    if isinstance(layer, nf.GlobalAvgPool):
        return x.astype(np.float64).mean(axis=(2, 3), keepdims=True).astype(np.float32)
    if isinstance(layer, nf.Add):
        return (ins[0] + ins[1]).astype(np.float32)
    if isinstance(layer, nf.Flatten):
        return x.reshape(x.shape[0], -1)
    if isinstance(layer, nf.Gemm):
        y = x.reshape(x.shape[0], -1).astype(np.float64) @ layer.weight.T.astype(np.float64)
        if layer.bias is not None:
            y += layer.bias
        return y.astype(np.float32)
    raise nf.FormatError(f"reference: unknown layer {type(layer).__name__}")


def run(model: nf.NativeModel | bytes, x: np.ndarray) -> np.ndarray:
    if isinstance(model, bytes | bytearray):
        model = nf.loads(bytes(model))
    values: dict[int, np.ndarray] = {model.input_id: np.asarray(x, np.float32)}
    for layer in model.layers:
        values[layer.output] = run_layer(layer, [values[i] for i in layer.inputs])
    return values[model.output_id]

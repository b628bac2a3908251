"""Plain-numpy NCHW operators shared by the reference interpreters.

converters/reference.py runs native models and the IR with them,
converters/backends/dabnn/reference.py runs ``.dab`` models with them (transposing daBNN's
NHWC buffers), and the tests check the C engine against them. They are written for clarity,
not speed:

* convolutions, GEMM and average pools sum in float64 and round to float32 once;
* a binary conv's dot product of ±1 values is an exact integer, whatever the summation order;
  its epilogue ``scale·dot + bias`` is a float32 multiply then a float32 add, the order the
  engine uses, so results match it bit for bit;
* affine, clip, add and max pool are float32 operations as written.

Where libraries disagree, the difference is a parameter, not a copy of the code:
:class:`BinarySemantics` says how a binary conv binarizes an exact 0 and what its padded taps
hold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Pads = tuple[int, int, int, int]  # top, left, bottom, right


@dataclass(frozen=True)
class BinarySemantics:
    """How a binary conv binarizes its input and pads it.

    ``zero_sign``: the sign of an exact 0 (after the threshold), +1 or −1.
    ``pad_value``: what a padded tap holds in the ±1 domain — 0 (it contributes nothing, as
    zero padding of the float input does in the ONNX model), −1 or +1.
    """

    zero_sign: float = 1.0
    pad_value: float = 0.0


def pad(x: np.ndarray, pads: Pads, fill: float = 0.0) -> np.ndarray:
    """Pad the two spatial axes of an NCHW array."""
    t, left, b, r = pads
    return np.pad(x, ((0, 0), (0, 0), (t, b), (left, r)), constant_values=fill)


def windows(
    x: np.ndarray, kernel: tuple[int, int], strides: tuple[int, int], pads: Pads, fill: float = 0.0
) -> np.ndarray:
    """(N, C, kh, kw, OH, OW) read-only view of the padded NCHW input."""
    xp = pad(x, pads, fill)
    n, c, h, w = xp.shape
    oh = (h - kernel[0]) // strides[0] + 1
    ow = (w - kernel[1]) // strides[1] + 1
    s = xp.strides
    return np.lib.stride_tricks.as_strided(
        xp,
        (n, c, kernel[0], kernel[1], oh, ow),
        (s[0], s[1], s[2], s[3], s[2] * strides[0], s[3] * strides[1]),
        writeable=False,
    )


def conv2d(
    x: np.ndarray, w: np.ndarray, strides: tuple[int, int], pads: Pads, fill: float = 0.0
) -> np.ndarray:
    """Cross-correlation NCHW × OIHW in float64 (no bias); padded taps hold ``fill``."""
    o, c, kh, kw = w.shape
    win = windows(x.astype(np.float64), (kh, kw), strides, pads, fill)
    n, _, _, _, oh, ow = win.shape
    cols = win.reshape(n, c * kh * kw, oh * ow)
    return (w.reshape(o, -1).astype(np.float64) @ cols).reshape(n, o, oh, ow)


def conv2d_f32(
    x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, strides: tuple[int, int], pads: Pads
) -> np.ndarray:
    """A float conv with zero padding and an optional bias, rounded to float32 once."""
    y = conv2d(x, w, strides, pads)
    if bias is not None:
        y += bias.reshape(1, -1, 1, 1)
    return y.astype(np.float32)


def binarize(v: np.ndarray, zero_sign: float = 1.0) -> np.ndarray:
    """±1 (float64) by sign; an exact 0 gets ``zero_sign``."""
    return np.where(v >= 0 if zero_sign > 0 else v > 0, 1.0, -1.0)


def binary_dot(
    x: np.ndarray,
    weight_sign: np.ndarray,
    strides: tuple[int, int],
    pads: Pads,
    threshold: np.ndarray | None = None,
    semantics: BinarySemantics = BinarySemantics(),
) -> np.ndarray:
    """sign(x − threshold) ⊛ weight_sign: exact integers (float64), NCHW."""
    v = x if threshold is None else x - np.asarray(threshold, np.float32).reshape(1, -1, 1, 1)
    a = binarize(v, semantics.zero_sign)
    return conv2d(a, np.asarray(weight_sign, np.float64), strides, pads, semantics.pad_value)


def binary_conv(
    x: np.ndarray,
    weight_sign: np.ndarray,
    strides: tuple[int, int],
    pads: Pads,
    threshold: np.ndarray | None = None,
    scale: np.ndarray | None = None,
    bias: np.ndarray | None = None,
    semantics: BinarySemantics = BinarySemantics(),
) -> np.ndarray:
    """``scale·dot + bias`` in float32 (multiply, then add); scale defaults to 1, bias to 0."""
    dot = binary_dot(x, weight_sign, strides, pads, threshold, semantics).astype(np.float32)
    o = dot.shape[1]
    scale = np.ones(o, np.float32) if scale is None else np.asarray(scale, np.float32)
    bias = np.zeros(o, np.float32) if bias is None else np.asarray(bias, np.float32)
    return (dot * scale.reshape(1, -1, 1, 1) + bias.reshape(1, -1, 1, 1)).astype(np.float32)


def affine(x: np.ndarray, scale: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Per-channel ``x·scale + bias`` (channels on axis 1: NCHW or N×F), float32."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return (x * scale.reshape(shape) + bias.reshape(shape)).astype(np.float32)


def clip(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.clip(x, lo, hi).astype(np.float32)


def max_pool(
    x: np.ndarray, kernel: tuple[int, int], strides: tuple[int, int], pads: Pads
) -> np.ndarray:
    """Padded taps never win (−inf)."""
    return windows(x, kernel, strides, pads, -np.inf).max(axis=(2, 3))


def avg_pool(
    x: np.ndarray,
    kernel: tuple[int, int],
    strides: tuple[int, int],
    pads: Pads,
    count_include_pad: bool,
) -> np.ndarray:
    """Padded taps add 0; the divisor counts them only with ``count_include_pad``."""
    total = windows(x.astype(np.float64), kernel, strides, pads).sum(axis=(2, 3))
    if count_include_pad:
        count = np.full(total.shape[2:], kernel[0] * kernel[1], np.float64)
    else:
        ones = np.ones((1, 1) + x.shape[2:])
        count = windows(ones, kernel, strides, pads).sum(axis=(2, 3))[0, 0]
    return (total / count).astype(np.float32)


def global_avg_pool(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float64).mean(axis=(2, 3), keepdims=True).astype(np.float32)


def add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a + b).astype(np.float32)


def flatten(x: np.ndarray) -> np.ndarray:
    return x.reshape(x.shape[0], -1)


def gemm(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """``x·wᵀ + bias`` in float64 (x flattened to N×F, w is out×in), rounded to float32."""
    y = x.reshape(x.shape[0], -1).astype(np.float64) @ w.T.astype(np.float64)
    if bias is not None:
        y += bias
    return y.astype(np.float32)


def nhwc_to_nchw(x: np.ndarray) -> np.ndarray:
    return np.transpose(x, (0, 3, 1, 2))


def nchw_to_nhwc(x: np.ndarray) -> np.ndarray:
    return np.transpose(x, (0, 2, 3, 1))

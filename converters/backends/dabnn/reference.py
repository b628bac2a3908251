"""Numpy reference of daBNN's runtime: a ``.dab`` model executed the way daBNN computes it,
with the operators of converters/numpy_ops.py. Together with the IR under daBNN's semantics
(``converters.reference.run_ir(graph, x, DABNN)``) it checks the converter without daBNN.

daBNN semantics (from dabnn/layers/*, dabnn/bitpack.h, common/baseline.h, dabnn/pad.h,
dabnn/fused_binarize_im2col.h at commit d93aa95):

* BinConv2D binarizes its float NHWC input as bit = (x > 0), so 0 counts as −1; padded taps
  are bit 0 (−1) — ``converters.reference.DABNN``; the output is the float count of
  mismatching bits (XOR popcount) over the kernel's taps, plus any set alignment bits of the
  filter (they meet zero column bits in the binary GEMM). A following Affine turns it into
  ``scale·dot + bias``.
* FpConv2D pads with zeros; MaxPool ignores padded taps; AvePool averages the taps inside.
* Affine, Add, Relu and PRelu overwrite their (first) input's buffer; the executor keeps
  buffers, not values, so a model that reads a clobbered name gets what daBNN would.
"""

from __future__ import annotations

import numpy as np

from converters import numpy_ops as ops
from converters.backends.dabnn import bits
from converters.backends.dabnn.check import pair, sym_pads
from converters.backends.dabnn.model import DabFormatError, DabModel, Layer
from converters.reference import DABNN


def _nchw(x_hwc: np.ndarray) -> np.ndarray:
    """A daBNN buffer (H, W, C) as a one-image NCHW array (a view)."""
    return ops.nhwc_to_nchw(x_hwc[None])


def _hwc(y: np.ndarray) -> np.ndarray:
    return ops.nchw_to_nhwc(y)[0]


def binconv_mismatches(
    x_hwc: np.ndarray,
    words: np.ndarray,
    w_shape: tuple[int, ...],
    strides: tuple[int, int],
    pads: tuple[int, int],
) -> np.ndarray:
    """daBNN's BinConv2D output: mismatch counts as float32 (H', W', O)."""
    o, kh, kw, c = w_shape
    k = kh * kw * c
    wbits = bits.unpack_words(words, o)
    extra = wbits[:, k:].sum(axis=1)  # alignment bits that are set count as mismatches
    w_pm = wbits[:, :k].reshape(o, kh, kw, c).transpose(0, 3, 1, 2).astype(np.float64) * 2 - 1
    ph, pw = pads
    dot = ops.binary_dot(_nchw(x_hwc), w_pm, strides, (ph, pw, ph, pw), semantics=DABNN)
    return _hwc((k - dot) / 2 + extra.reshape(1, -1, 1, 1)).astype(np.float32)


def _pool(x: np.ndarray, layer: Layer, is_max: bool) -> np.ndarray:
    p = layer.params
    kernel = tuple(p["kernel_shape"])
    strides = pair(p.get("strides"), "strides", 1)
    ph, pw = sym_pads(p.get("pads") or [0, 0], layer.name)
    if is_max:
        return _hwc(ops.max_pool(_nchw(x), kernel, strides, (ph, pw, ph, pw)))
    return _hwc(ops.avg_pool(_nchw(x), kernel, strides, (ph, pw, ph, pw), count_include_pad=False))


def _vec(model: DabModel, name: str) -> np.ndarray:
    t = model.tensor(name)
    assert t.float32_data is not None
    return t.float32_data.astype(np.float32)


def execute(
    model: DabModel, x_nhwc: np.ndarray, snapshots: bool = False
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Run the model on one NHWC input; returns the last layer's output (1, H, W, C) and, with
    ``snapshots``, a copy of every layer's output taken right after that layer ran."""
    inp = model.inputs[0]
    x = np.asarray(x_nhwc, np.float32)
    if tuple(x.shape) != tuple(inp.shape):
        raise ValueError(f"input shape {x.shape}, the model takes {inp.shape}")
    buffers: list[np.ndarray] = [x[0].copy()]
    where: dict[str, int] = {inp.name: 0}
    snaps: dict[str, np.ndarray] = {}
    for layer in model.layers:
        p = layer.params
        src = buffers[where[layer.inputs()[0]]]
        t = layer.type
        if t in ("FpConv2D", "BinConv2D"):
            w = model.tensor(p["weight"])
            sh, sw = pair(p.get("strides"), "strides", 1)
            ph, pw = sym_pads(p.get("pads") or [0, 0], layer.name)
            if t == "BinConv2D":
                assert w.bin_data is not None
                y = binconv_mismatches(src, w.bin_data, w.shape, (sh, sw), (ph, pw))
            else:
                assert w.float32_data is not None
                w_oihw = w.float32_data.reshape(w.shape).transpose(0, 3, 1, 2)
                bias = _vec(model, p["bias"]) if p.get("bias") else None
                y = _hwc(ops.conv2d_f32(_nchw(src), w_oihw, bias, (sh, sw), (ph, pw, ph, pw)))
            out = _new(buffers, y)
        elif t == "MaxPool":
            out = _new(buffers, _pool(src, layer, True))
        elif t == "AvePool":
            out = _new(buffers, _pool(src, layer, False))
        elif t == "Concat":
            other = buffers[where[layer.inputs()[1]]]
            out = _new(buffers, np.concatenate([src, other], axis=2))
        elif t == "Affine":
            src[...] = src * _vec(model, p["a"]) + _vec(model, p["b"])
            out = where[p["input"]]
        elif t == "Relu":
            np.maximum(src, np.float32(0), out=src)
            out = where[p["input"]]
        elif t == "PRelu":
            slope = _vec(model, p["slope"])
            src[...] = np.where(src < 0, src * slope, src)
            out = where[p["input"]]
        elif t == "Add":
            src += buffers[where[p["input2"]]]
            out = where[p["input1"]]
        else:
            raise DabFormatError(f"reference: {t} layers are not implemented")
        where[layer.output] = out
        if snapshots:
            snaps[layer.output] = buffers[out].copy()
    return buffers[where[model.output]][None].copy(), snaps


def _new(buffers: list[np.ndarray], y: np.ndarray) -> int:
    buffers.append(np.ascontiguousarray(y, np.float32))
    return len(buffers) - 1


def run_dab(model: DabModel, x_nchw: np.ndarray) -> np.ndarray:
    """NCHW input (as for the ONNX model) → the model's output, NHWC (1, H, W, C)."""
    return execute(model, ops.nchw_to_nhwc(np.asarray(x_nchw, np.float32)))[0]


def nhwc_to_ir(y: np.ndarray, ir_shape: tuple[int, ...]) -> np.ndarray:
    """A daBNN output in the IR's layout: NCHW, or N×F for a 1×1 map under a rank-2 value."""
    if len(ir_shape) == 2:
        return y.reshape(ir_shape)
    return ops.nhwc_to_nchw(y).reshape(ir_shape)

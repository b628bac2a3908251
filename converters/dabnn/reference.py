"""Numpy references: a ``.dab`` model executed the way daBNN's runtime computes it, and the IR
executed under either padding semantics. Together they check the converter without daBNN.

daBNN semantics (from dabnn/layers/*, dabnn/bitpack.h, common/baseline.h, dabnn/pad.h,
dabnn/fused_binarize_im2col.h at commit d93aa95):

* BinConv2D binarizes its float NHWC input as bit = (x > 0), so 0 counts as −1; padded taps
  are bit 0 (−1); the output is the float count of mismatching bits (XOR popcount) over the
  kernel's taps, plus any set alignment bits of the filter (they meet zero column bits in the
  binary GEMM). A following Affine turns it into ``scale·dot + bias``.
* FpConv2D pads with zeros; MaxPool ignores padded taps; AvePool averages the taps inside.
* Affine, Add, Relu and PRelu overwrite their (first) input's buffer; the executor keeps
  buffers, not values, so a model that reads a clobbered name gets what daBNN would.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from converters import ir
from converters.dabnn import bits
from converters.dabnn.check import pair, sym_pads
from converters.dabnn.model import DabFormatError, DabModel, Layer


def _windows_nhwc(x: np.ndarray, kh: int, kw: int, sh: int, sw: int, ph: int, pw: int,
                  fill: float) -> np.ndarray:
    """(OH, OW, kh, kw, C) view of a padded (H, W, C) array."""
    xp = np.pad(x, ((ph, ph), (pw, pw), (0, 0)), constant_values=fill)
    h, w, c = xp.shape
    oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
    s = xp.strides
    return np.lib.stride_tricks.as_strided(
        xp, (oh, ow, kh, kw, c), (s[0] * sh, s[1] * sw, s[0], s[1], s[2]), writeable=False)


def _conv_nhwc(x: np.ndarray, w_ohwi: np.ndarray, sh: int, sw: int, ph: int, pw: int,
               fill: float) -> np.ndarray:
    o, kh, kw, c = w_ohwi.shape
    win = _windows_nhwc(x.astype(np.float64), kh, kw, sh, sw, ph, pw, fill)
    oh, ow = win.shape[:2]
    cols = win.reshape(oh * ow, kh * kw * c)
    return (cols @ w_ohwi.reshape(o, -1).astype(np.float64).T).reshape(oh, ow, o)


def binconv_mismatches(x_hwc: np.ndarray, words: np.ndarray, w_shape: tuple[int, ...],
                       strides: tuple[int, int], pads: tuple[int, int]) -> np.ndarray:
    """daBNN's BinConv2D output: mismatch counts as float32 (H', W', O)."""
    o, kh, kw, c = w_shape
    k = kh * kw * c
    wbits = bits.unpack_words(words, o)
    extra = wbits[:, k:].sum(axis=1)  # alignment bits that are set count as mismatches
    w_pm = wbits[:, :k].astype(np.float64).reshape(o, kh, kw, c) * 2 - 1
    a = np.where(x_hwc > 0, 1.0, -1.0)
    dot = _conv_nhwc(a, w_pm, strides[0], strides[1], pads[0], pads[1], -1.0)
    return ((k - dot) / 2 + extra).astype(np.float32)


def _pool(x: np.ndarray, layer: Layer, is_max: bool) -> np.ndarray:
    p = layer.params
    kh, kw = p["kernel_shape"]
    sh, sw = pair(p.get("strides"), "strides", 1)
    ph, pw = sym_pads(p.get("pads") or [0, 0], layer.name)
    if is_max:
        return _windows_nhwc(x, kh, kw, sh, sw, ph, pw, -np.inf).max(axis=(2, 3))
    win = _windows_nhwc(x.astype(np.float64), kh, kw, sh, sw, ph, pw, 0.0)
    ones = _windows_nhwc(np.ones(x.shape[:2] + (1,)), kh, kw, sh, sw, ph, pw, 0.0)
    return (win.sum(axis=(2, 3)) / ones.sum(axis=(2, 3))).astype(np.float32)


def _vec(model: DabModel, name: str) -> np.ndarray:
    t = model.tensor(name)
    assert t.float32_data is not None
    return t.float32_data.astype(np.float32)


def execute(model: DabModel, x_nhwc: np.ndarray,
            snapshots: bool = False) -> tuple[np.ndarray, dict[str, np.ndarray]]:
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
                wf = w.float32_data.reshape(w.shape)
                y64 = _conv_nhwc(src, wf, sh, sw, ph, pw, 0.0)
                if p.get("bias"):
                    y64 += _vec(model, p["bias"])
                y = y64.astype(np.float32)
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
    return execute(model, np.transpose(np.asarray(x_nchw, np.float32), (0, 2, 3, 1)))[0]


def nhwc_to_ir(y: np.ndarray, ir_shape: tuple[int, ...]) -> np.ndarray:
    """A daBNN output in the IR's layout: NCHW, or N×F for a 1×1 map under a rank-2 value."""
    if len(ir_shape) == 2:
        return y.reshape(ir_shape)
    return np.transpose(y, (0, 3, 1, 2)).reshape(ir_shape)


# -- the IR under either semantics -------------------------------------------------------

Semantics = Literal["ir", "dabnn"]


def _conv_nchw(x: np.ndarray, w: np.ndarray, strides: tuple[int, int], pads: ir.Pads,
               fill: float) -> np.ndarray:
    t, left, b, r = pads
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (t, b), (left, r)), constant_values=fill)
    o, c, kh, kw = w.shape
    n, _, h, wd = xp.shape
    oh, ow = (h - kh) // strides[0] + 1, (wd - kw) // strides[1] + 1
    s = xp.strides
    win = np.lib.stride_tricks.as_strided(
        xp, (n, oh, ow, c, kh, kw), (s[0], s[2] * strides[0], s[3] * strides[1], s[1], s[2], s[3]),
        writeable=False)
    cols = win.reshape(n, oh * ow, c * kh * kw)
    y = cols @ w.reshape(o, -1).astype(np.float64).T
    return np.transpose(y.reshape(n, oh, ow, o), (0, 3, 1, 2))


def _pool_nchw(x: np.ndarray, n: ir.MaxPool | ir.AvgPool) -> np.ndarray:
    t, left, b, r = n.pads
    kh, kw = n.kernel
    fill = -np.inf if isinstance(n, ir.MaxPool) else 0.0
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (t, b), (left, r)), constant_values=fill)
    s = xp.strides
    nb, c, h, w = xp.shape
    oh, ow = (h - kh) // n.strides[0] + 1, (w - kw) // n.strides[1] + 1
    shape = (nb, c, oh, ow, kh, kw)
    st = (s[0], s[1], s[2] * n.strides[0], s[3] * n.strides[1], s[2], s[3])
    win = np.lib.stride_tricks.as_strided(xp, shape, st, writeable=False)
    if isinstance(n, ir.MaxPool):
        return win.max(axis=(4, 5)).astype(np.float32)
    total = win.sum(axis=(4, 5))
    if n.count_include_pad:
        return (total / (kh * kw)).astype(np.float32)
    ones = np.pad(np.ones((1, 1) + x.shape[2:]), ((0, 0), (0, 0), (t, b), (left, r)))
    so = ones.strides
    cnt = np.lib.stride_tricks.as_strided(
        ones, (1, 1, oh, ow, kh, kw),
        (so[0], so[1], so[2] * n.strides[0], so[3] * n.strides[1], so[2], so[3]),
        writeable=False).sum(axis=(4, 5))
    return (total / cnt).astype(np.float32)


def eval_node(n: ir.Node, ins: list[np.ndarray], semantics: Semantics) -> np.ndarray:
    """One IR node. ``semantics="ir"``: sign(0) = +1, binary-conv padding contributes 0 (what
    the ONNX model means). ``"dabnn"``: bit = (x > 0), padded taps are −1."""
    x = ins[0]
    if isinstance(n, ir.Conv):
        y = _conv_nchw(x, n.weight, n.strides, n.pads, 0.0)
        if n.bias is not None:
            y += n.bias.reshape(1, -1, 1, 1)
        return y.astype(np.float32)
    if isinstance(n, ir.BinConv):
        v = x if n.threshold is None else x - n.threshold.reshape(1, -1, 1, 1)
        a = np.where(v > 0 if semantics == "dabnn" else v >= 0, 1.0, -1.0)
        fill = -1.0 if semantics == "dabnn" else 0.0
        dot = _conv_nchw(a, n.weight_sign.astype(np.float64), n.strides, n.pads, fill)
        return (dot.astype(np.float32) * n.scale.reshape(1, -1, 1, 1)
                + n.bias.reshape(1, -1, 1, 1)).astype(np.float32)
    if isinstance(n, ir.Affine):
        return (x * n.scale.reshape(1, -1, 1, 1) + n.bias.reshape(1, -1, 1, 1)).astype(np.float32)
    if isinstance(n, ir.Clip):
        return np.clip(x, n.min, n.max).astype(np.float32)
    if isinstance(n, ir.MaxPool | ir.AvgPool):
        return _pool_nchw(x, n)
    if isinstance(n, ir.GlobalAvgPool):
        return x.astype(np.float64).mean(axis=(2, 3), keepdims=True).astype(np.float32)
    if isinstance(n, ir.Add):
        return (ins[0] + ins[1]).astype(np.float32)
    if isinstance(n, ir.Flatten):
        return x.reshape(x.shape[0], -1)
    if isinstance(n, ir.Gemm):
        y = x.reshape(x.shape[0], -1).astype(np.float64) @ n.weight.T.astype(np.float64)
        if n.bias is not None:
            y += n.bias
        return y.astype(np.float32)
    raise TypeError(f"IR node {n.name!r} of kind {n.kind}")


def run_ir(graph: ir.Graph, x: np.ndarray, semantics: Semantics = "ir") -> dict[str, np.ndarray]:
    """Every IR value for one NCHW input."""
    vals = {graph.input: np.asarray(x, np.float32)}
    for n in graph.nodes:
        vals[n.output] = eval_node(n, [vals[i] for i in n.inputs], semantics)
    return vals

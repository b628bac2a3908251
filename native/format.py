"""Python side of the native model format (see FORMAT.md): layer records, writer and reader.

The C loader in ``native/src/model.c`` is the authority on what is accepted; this module
writes exactly what FORMAT.md describes and can read it back for inspection and tests.
Only numpy is needed, so an agent can use it without the converter stack.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path

import numpy as np

MAGIC = b"BNNB"
VERSION = 1


class Op(IntEnum):
    CONV2D_F32 = 1
    CONV2D_BIN = 2
    AFFINE = 3
    CLIP = 4
    MAXPOOL = 5
    AVGPOOL = 6
    GLOBAL_AVGPOOL = 7
    ADD = 8
    FLATTEN = 9
    GEMM = 10


Pads = tuple[int, int, int, int]  # top, left, bottom, right


@dataclass
class Layer:
    inputs: list[int]
    output: int
    name: str = ""


@dataclass
class Conv2dF32(Layer):
    weight: np.ndarray = field(default_factory=lambda: np.zeros((1, 1, 1, 1), np.float32))
    bias: np.ndarray | None = None
    strides: tuple[int, int] = (1, 1)
    pads: Pads = (0, 0, 0, 0)
    op = Op.CONV2D_F32


@dataclass
class Conv2dBin(Layer):
    """Binary conv. ``weight_sign`` holds ±1 (any numeric dtype), shape OIHW."""

    weight_sign: np.ndarray = field(default_factory=lambda: np.ones((1, 1, 1, 1), np.int8))
    scale: np.ndarray | None = None  # f32[out_c], defaults to 1
    bias: np.ndarray | None = None  # f32[out_c], defaults to 0
    threshold: np.ndarray | None = None  # f32[in_c] (ReActNet shift), None = plain sign
    strides: tuple[int, int] = (1, 1)
    pads: Pads = (0, 0, 0, 0)
    op = Op.CONV2D_BIN


@dataclass
class Affine(Layer):
    scale: np.ndarray = field(default_factory=lambda: np.ones(1, np.float32))
    bias: np.ndarray = field(default_factory=lambda: np.zeros(1, np.float32))
    op = Op.AFFINE


@dataclass
class Clip(Layer):
    min: float = -1.0
    max: float = 1.0
    op = Op.CLIP


@dataclass
class MaxPool(Layer):
    kernel: tuple[int, int] = (2, 2)
    strides: tuple[int, int] = (2, 2)
    pads: Pads = (0, 0, 0, 0)
    op = Op.MAXPOOL


@dataclass
class AvgPool(Layer):
    kernel: tuple[int, int] = (2, 2)
    strides: tuple[int, int] = (2, 2)
    pads: Pads = (0, 0, 0, 0)
    count_include_pad: bool = False
    op = Op.AVGPOOL


@dataclass
class GlobalAvgPool(Layer):
    op = Op.GLOBAL_AVGPOOL


@dataclass
class Add(Layer):
    op = Op.ADD


@dataclass
class Flatten(Layer):
    op = Op.FLATTEN


@dataclass
class Gemm(Layer):
    weight: np.ndarray = field(default_factory=lambda: np.zeros((1, 1), np.float32))  # (out, in)
    bias: np.ndarray | None = None
    op = Op.GEMM


@dataclass
class NativeModel:
    input_shape: tuple[int, ...]  # NCHW or (N, F)
    layers: list[Layer]
    n_values: int
    input_id: int = 0
    output_id: int = 0
    metadata: dict = field(default_factory=dict)


class FormatError(ValueError):
    """A file or model that does not follow FORMAT.md."""


# ---------------------------------------------------------------- writing


def _u32(*vals: int) -> bytes:
    return struct.pack(f"<{len(vals)}I", *vals)


def _f32(a: np.ndarray | list[float]) -> bytes:
    return np.ascontiguousarray(a, dtype="<f4").tobytes()


def _geometry(kernel: tuple[int, int], strides: tuple[int, int], pads: Pads) -> bytes:
    t, left, b, r = pads
    return _u32(kernel[0], kernel[1], strides[0], strides[1], t, left, b, r)


def pack_sign_bits(weight_sign: np.ndarray) -> np.ndarray:
    """OIHW ±1 weights → u64 words laid out [o][i][j][word], bit 1 = −1, tail bits 0."""
    w = np.asarray(weight_sign)
    if not np.all(np.abs(w) == 1):
        raise FormatError("binary weights must be exactly +1 or -1")
    o, c, kh, kw = w.shape
    words = (c + 63) // 64
    neg = (w < 0).transpose(0, 2, 3, 1)  # O, kh, kw, C
    padded = np.zeros((o, kh, kw, words * 64), dtype=np.uint8)
    padded[..., :c] = neg
    # little bit order: channel 64*w + j -> bit j of word w
    packed = np.packbits(padded.reshape(o, kh, kw, words, 64), axis=-1, bitorder="little")
    return packed.view("<u8").reshape(o, kh, kw, words)


def unpack_sign_bits(bits: np.ndarray, in_c: int) -> np.ndarray:
    """Inverse of :func:`pack_sign_bits`: u64 [o][i][j][word] → OIHW float32 ±1."""
    o, kh, kw, words = bits.shape
    u8 = np.ascontiguousarray(bits, dtype="<u8").view(np.uint8).reshape(o, kh, kw, words * 8)
    b = np.unpackbits(u8, axis=-1, bitorder="little")[..., :in_c]
    return (1.0 - 2.0 * b).astype(np.float32).transpose(0, 3, 1, 2)


def _params(layer: Layer) -> bytes:
    if isinstance(layer, Conv2dF32):
        o, c, kh, kw = layer.weight.shape
        p = _u32(c, o) + _geometry((kh, kw), layer.strides, layer.pads)
        p += _u32(int(layer.bias is not None)) + _f32(layer.weight)
        return p + (_f32(layer.bias) if layer.bias is not None else b"")
    if isinstance(layer, Conv2dBin):
        o, c, kh, kw = layer.weight_sign.shape
        scale = np.ones(o, np.float32) if layer.scale is None else layer.scale
        bias = np.zeros(o, np.float32) if layer.bias is None else layer.bias
        p = _u32(c, o) + _geometry((kh, kw), layer.strides, layer.pads)
        p += _u32(0, int(layer.threshold is not None))
        if layer.threshold is not None:
            p += _f32(layer.threshold)
        p += pack_sign_bits(layer.weight_sign).tobytes()
        return p + _f32(scale) + _f32(bias)
    if isinstance(layer, Affine):
        return _u32(len(layer.scale)) + _f32(layer.scale) + _f32(layer.bias)
    if isinstance(layer, Clip):
        return struct.pack("<ff", layer.min, layer.max)
    if isinstance(layer, MaxPool):
        return _geometry(layer.kernel, layer.strides, layer.pads)
    if isinstance(layer, AvgPool):
        return _geometry(layer.kernel, layer.strides, layer.pads) + _u32(
            int(layer.count_include_pad)
        )
    if isinstance(layer, GlobalAvgPool | Add | Flatten):
        return b""
    if isinstance(layer, Gemm):
        o, i = layer.weight.shape
        p = _u32(i, o, int(layer.bias is not None)) + _f32(layer.weight)
        return p + (_f32(layer.bias) if layer.bias is not None else b"")
    raise FormatError(f"unknown layer type {type(layer).__name__}")


def dumps(model: NativeModel) -> bytes:
    dims = list(model.input_shape) + [1] * (4 - len(model.input_shape))
    meta = json.dumps(model.metadata, sort_keys=True).encode()
    out = [
        MAGIC,
        _u32(VERSION, 0, model.n_values, len(model.layers), model.input_id, model.output_id),
        _u32(len(model.input_shape), *dims),
        _u32(len(meta)),
        meta,
    ]
    for layer in model.layers:
        # cut at 1024 bytes (the format's limit) without splitting a UTF-8 sequence
        name = layer.name.encode()[:1024].decode(errors="ignore").encode()
        params = _params(layer)
        out += [
            _u32(int(layer.op), len(layer.inputs), *layer.inputs, layer.output, len(name)),
            name,
            _u32(len(params)),
            params,
        ]
    return b"".join(out)


def write_model(model: NativeModel, path: str | Path) -> int:
    """Write ``model`` to ``path``; returns the size in bytes."""
    data = dumps(model)
    Path(path).write_bytes(data)
    return len(data)


# ---------------------------------------------------------------- reading


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise FormatError(f"truncated file at byte {self.pos} (need {n} more)")
        b = self.data[self.pos : self.pos + n]
        self.pos += n
        return b

    def u32(self, n: int = 1) -> tuple[int, ...]:
        return struct.unpack(f"<{n}I", self.take(4 * n))

    def f32(self, n: int) -> np.ndarray:
        return np.frombuffer(self.take(4 * n), dtype="<f4").astype(np.float32)


def loads(data: bytes) -> NativeModel:
    """Parse a model (structure only; shape checking is the C loader's job)."""
    r = _Reader(data)
    if r.take(4) != MAGIC:
        raise FormatError("not a bnnbench native model (bad magic)")
    version, _flags, n_values, n_layers, input_id, output_id = r.u32(6)
    if version != VERSION:
        raise FormatError(f"unsupported format version {version}")
    rank, *dims = r.u32(5)
    (meta_len,) = r.u32()
    metadata = json.loads(r.take(meta_len) or b"{}")
    layers: list[Layer] = []
    for _ in range(n_layers):
        op, n_in = r.u32(2)
        inputs = list(r.u32(n_in))
        output, name_len = r.u32(2)
        name = r.take(name_len).decode(errors="replace")
        (plen,) = r.u32()
        p = _Reader(r.take(plen))
        base = {"inputs": inputs, "output": output, "name": name}
        if op not in Op._value2member_map_:
            raise FormatError(f"unknown op code {op}")
        layers.append(_parse_layer(Op(op), p, base))
        if p.pos != plen:
            raise FormatError(f"layer {name!r}: {plen - p.pos} unexpected parameter bytes")
    if r.pos != len(data):
        raise FormatError("trailing bytes after the last layer")
    return NativeModel(tuple(dims[:rank]), layers, n_values, input_id, output_id, metadata)


def _parse_layer(op: Op, p: _Reader, base: dict) -> Layer:
    if op in (Op.CONV2D_F32, Op.CONV2D_BIN):
        c, o, kh, kw, sh, sw, t, left, b, rr = p.u32(10)
        geo = {"strides": (sh, sw), "pads": (t, left, b, rr)}
        if op == Op.CONV2D_F32:
            (has_bias,) = p.u32()
            w = p.f32(o * c * kh * kw).reshape(o, c, kh, kw)
            return Conv2dF32(**base, weight=w, bias=p.f32(o) if has_bias else None, **geo)
        _pad_mode, has_thr = p.u32(2)
        thr = p.f32(c) if has_thr else None
        words = (c + 63) // 64
        bits = np.frombuffer(p.take(8 * o * kh * kw * words), dtype="<u8")
        w = unpack_sign_bits(bits.reshape(o, kh, kw, words), c)
        return Conv2dBin(
            **base, weight_sign=w, threshold=thr, scale=p.f32(o), bias=p.f32(o), **geo
        )
    if op == Op.AFFINE:
        (c,) = p.u32()
        return Affine(**base, scale=p.f32(c), bias=p.f32(c))
    if op == Op.CLIP:
        lo, hi = struct.unpack("<ff", p.take(8))
        return Clip(**base, min=lo, max=hi)
    if op in (Op.MAXPOOL, Op.AVGPOOL):
        kh, kw, sh, sw, t, left, b, rr = p.u32(8)
        geo = {"kernel": (kh, kw), "strides": (sh, sw), "pads": (t, left, b, rr)}
        if op == Op.MAXPOOL:
            return MaxPool(**base, **geo)
        (cip,) = p.u32()
        return AvgPool(**base, count_include_pad=bool(cip), **geo)
    if op == Op.GLOBAL_AVGPOOL:
        return GlobalAvgPool(**base)
    if op == Op.ADD:
        return Add(**base)
    if op == Op.FLATTEN:
        return Flatten(**base)
    if op == Op.GEMM:
        i, o, has_bias = p.u32(3)
        w = p.f32(o * i).reshape(o, i)
        return Gemm(**base, weight=w, bias=p.f32(o) if has_bias else None)
    raise FormatError(f"unknown op code {op}")

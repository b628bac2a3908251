"""Python side of the native model format (see FORMAT.md): the op vocabulary (one ``*Params``
class per op, which the converters' IR nodes share), layer records, writer and reader.

The C loader in ``native/src/model.c`` is the authority on what is accepted; this module
writes exactly what FORMAT.md describes and can read it back for inspection and tests.
Only numpy is needed, so an agent can use it without the converter stack.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field, fields
from enum import IntEnum
from pathlib import Path
from typing import Any, ClassVar

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


class FormatError(ValueError):
    """A file or model that does not follow FORMAT.md."""


# ---------------------------------------------------------------- byte helpers


def _u32(*vals: int) -> bytes:
    return struct.pack(f"<{len(vals)}I", *vals)


def _f32(a: np.ndarray | list[float]) -> bytes:
    return np.ascontiguousarray(a, dtype="<f4").tobytes()


def _geometry(kernel: tuple[int, int], strides: tuple[int, int], pads: Pads) -> bytes:
    t, left, b, r = pads
    return _u32(kernel[0], kernel[1], strides[0], strides[1], t, left, b, r)


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

    def geometry(self) -> dict[str, Any]:
        kh, kw, sh, sw, t, left, b, r = self.u32(8)
        return {"kernel": (kh, kw), "strides": (sh, sw), "pads": (t, left, b, r)}


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


# ---------------------------------------------------------------- the op vocabulary
#
# One dataclass per op holds the op's parameters, its opcode, its name in the converters'
# IR and analyses (``kind``) and its parameter block (``encode``/``decode``, FORMAT.md's op
# table). Native layers below add the file's wiring (value ids); the converters' IR nodes
# (converters/ir.py) add theirs (value names, ONNX provenance) to the same classes. So an
# op's fields exist once, and an IR node is written as a layer by copying them
# (:func:`layer_for`), with no per-op code in between.


@dataclass
class OpParams:
    """Parameters of one op (subclasses add the fields and name their opcode and kind:
    ``class GemmParams(OpParams, op=Op.GEMM, kind="gemm")``)."""

    op: ClassVar[Op]
    kind: ClassVar[str]

    def __init_subclass__(
        cls, op: Op | None = None, kind: str | None = None, **kwargs: Any
    ) -> None:
        super().__init_subclass__(**kwargs)
        if op is not None:
            cls.op = op
        if kind is not None:
            cls.kind = kind

    def __post_init__(self) -> None:
        # cooperative: the wiring class after this one in the MRO (an IR node) may have its own
        post = getattr(super(), "__post_init__", None)
        if post is not None:
            post()

    def encode(self) -> bytes:
        """The op's parameter block (FORMAT.md); empty for ops without parameters."""
        return b""

    @classmethod
    def decode(cls, p: _Reader) -> dict[str, Any]:
        """The keyword arguments :meth:`encode` wrote, read back."""
        return {}


class _ConvShape:
    """``out_c``, ``in_c`` and ``kernel`` of a conv, from its OIHW filter."""

    @property
    def filter(self) -> np.ndarray:
        raise NotImplementedError

    @property
    def out_c(self) -> int:
        return int(self.filter.shape[0])

    @property
    def in_c(self) -> int:
        return int(self.filter.shape[1])

    @property
    def kernel(self) -> tuple[int, int]:
        return int(self.filter.shape[2]), int(self.filter.shape[3])


@dataclass
class Conv2dF32Params(_ConvShape, OpParams, op=Op.CONV2D_F32, kind="conv"):
    """FP32 convolution, OIHW weights, zero padding."""

    weight: np.ndarray = field(default_factory=lambda: np.zeros((1, 1, 1, 1), np.float32))
    bias: np.ndarray | None = None
    strides: tuple[int, int] = (1, 1)
    pads: Pads = (0, 0, 0, 0)

    @property
    def filter(self) -> np.ndarray:
        return self.weight

    def encode(self) -> bytes:
        p = _u32(self.in_c, self.out_c) + _geometry(self.kernel, self.strides, self.pads)
        p += _u32(int(self.bias is not None)) + _f32(self.weight)
        return p + (_f32(self.bias) if self.bias is not None else b"")

    @classmethod
    def decode(cls, p: _Reader) -> dict[str, Any]:
        c, o = p.u32(2)
        geo = p.geometry()
        (has_bias,) = p.u32()
        kh, kw = geo.pop("kernel")
        w = p.f32(o * c * kh * kw).reshape(o, c, kh, kw)
        return {"weight": w, "bias": p.f32(o) if has_bias else None, **geo}


@dataclass
class Conv2dBinParams(_ConvShape, OpParams, op=Op.CONV2D_BIN, kind="binconv"):
    """Binary conv: ``scale[o]·Σ sign(x − threshold)·w + bias[o]``; ``weight_sign`` holds ±1
    (any numeric dtype), OIHW. ``scale``/``bias`` left out are 1/0 per output channel (filled
    in on construction, so a constructed op always holds both); ``threshold`` is f32[in_c]
    (ReActNet's shift) or None for a plain sign."""

    weight_sign: np.ndarray = field(default_factory=lambda: np.ones((1, 1, 1, 1), np.int8))
    scale: np.ndarray | None = None
    bias: np.ndarray | None = None
    threshold: np.ndarray | None = None
    strides: tuple[int, int] = (1, 1)
    pads: Pads = (0, 0, 0, 0)

    def __post_init__(self) -> None:
        if self.scale is None:
            self.scale = np.ones(self.out_c, np.float32)
        if self.bias is None:
            self.bias = np.zeros(self.out_c, np.float32)
        super().__post_init__()

    @property
    def filter(self) -> np.ndarray:
        return self.weight_sign

    def encode(self) -> bytes:
        p = _u32(self.in_c, self.out_c) + _geometry(self.kernel, self.strides, self.pads)
        p += _u32(0, int(self.threshold is not None))  # pad_mode 0: zero padding
        if self.threshold is not None:
            p += _f32(self.threshold)
        p += pack_sign_bits(self.weight_sign).tobytes()
        return p + _f32(self.scale) + _f32(self.bias)

    @classmethod
    def decode(cls, p: _Reader) -> dict[str, Any]:
        c, o = p.u32(2)
        geo = p.geometry()
        kh, kw = geo.pop("kernel")
        _pad_mode, has_thr = p.u32(2)
        thr = p.f32(c) if has_thr else None
        words = (c + 63) // 64
        bits = np.frombuffer(p.take(8 * o * kh * kw * words), dtype="<u8")
        w = unpack_sign_bits(bits.reshape(o, kh, kw, words), c)
        return {"weight_sign": w, "threshold": thr, "scale": p.f32(o), "bias": p.f32(o), **geo}


@dataclass
class AffineParams(OpParams, op=Op.AFFINE, kind="affine"):
    """Per-channel ``x·scale + bias`` (an unfolded BatchNorm)."""

    scale: np.ndarray = field(default_factory=lambda: np.ones(1, np.float32))
    bias: np.ndarray = field(default_factory=lambda: np.zeros(1, np.float32))

    def encode(self) -> bytes:
        return _u32(len(self.scale)) + _f32(self.scale) + _f32(self.bias)

    @classmethod
    def decode(cls, p: _Reader) -> dict[str, Any]:
        (c,) = p.u32()
        return {"scale": p.f32(c), "bias": p.f32(c)}


@dataclass
class ClipParams(OpParams, op=Op.CLIP, kind="clip"):
    """Hardtanh is [-1, 1], ReLU [0, inf]."""

    min: float = -1.0
    max: float = 1.0

    def encode(self) -> bytes:
        return struct.pack("<ff", self.min, self.max)

    @classmethod
    def decode(cls, p: _Reader) -> dict[str, Any]:
        lo, hi = struct.unpack("<ff", p.take(8))
        return {"min": lo, "max": hi}


@dataclass
class _PoolParams(OpParams):
    """Pooling geometry (FORMAT.md's block G)."""

    kernel: tuple[int, int] = (2, 2)
    strides: tuple[int, int] = (2, 2)
    pads: Pads = (0, 0, 0, 0)

    def encode(self) -> bytes:
        return _geometry(self.kernel, self.strides, self.pads)

    @classmethod
    def decode(cls, p: _Reader) -> dict[str, Any]:
        return p.geometry()


@dataclass
class MaxPoolParams(_PoolParams, op=Op.MAXPOOL, kind="maxpool"):
    """Padded taps never win (−inf)."""


@dataclass
class AvgPoolParams(_PoolParams, op=Op.AVGPOOL, kind="avgpool"):
    """Padded taps add 0; the divisor counts them only with ``count_include_pad``."""

    count_include_pad: bool = False

    def encode(self) -> bytes:
        return super().encode() + _u32(int(self.count_include_pad))

    @classmethod
    def decode(cls, p: _Reader) -> dict[str, Any]:
        geo = super().decode(p)
        (cip,) = p.u32()
        return {**geo, "count_include_pad": bool(cip)}


@dataclass
class GlobalAvgPoolParams(OpParams, op=Op.GLOBAL_AVGPOOL, kind="global_avgpool"):
    """Mean over H and W; output N×C×1×1."""


@dataclass
class AddParams(OpParams, op=Op.ADD, kind="add"):
    """Two inputs of identical shape."""


@dataclass
class FlattenParams(OpParams, op=Op.FLATTEN, kind="flatten"):
    """N×C×H×W → N×(C·H·W), in C, H, W order."""


@dataclass
class GemmParams(OpParams, op=Op.GEMM, kind="gemm"):
    """``y = x·Wᵀ + b`` with W shaped (out, in)."""

    weight: np.ndarray = field(default_factory=lambda: np.zeros((1, 1), np.float32))
    bias: np.ndarray | None = None

    def encode(self) -> bytes:
        o, i = self.weight.shape
        p = _u32(i, o, int(self.bias is not None)) + _f32(self.weight)
        return p + (_f32(self.bias) if self.bias is not None else b"")

    @classmethod
    def decode(cls, p: _Reader) -> dict[str, Any]:
        i, o, has_bias = p.u32(3)
        w = p.f32(o * i).reshape(o, i)
        return {"weight": w, "bias": p.f32(o) if has_bias else None}


# ---------------------------------------------------------------- layers: ops wired by value id


@dataclass
class Layer:
    inputs: list[int]
    output: int
    name: str = ""


@dataclass
class Conv2dF32(Conv2dF32Params, Layer):
    pass


@dataclass
class Conv2dBin(Conv2dBinParams, Layer):
    pass


@dataclass
class Affine(AffineParams, Layer):
    pass


@dataclass
class Clip(ClipParams, Layer):
    pass


@dataclass
class MaxPool(MaxPoolParams, Layer):
    pass


@dataclass
class AvgPool(AvgPoolParams, Layer):
    pass


@dataclass
class GlobalAvgPool(GlobalAvgPoolParams, Layer):
    pass


@dataclass
class Add(AddParams, Layer):
    pass


@dataclass
class Flatten(FlattenParams, Layer):
    pass


@dataclass
class Gemm(GemmParams, Layer):
    pass


#: the layer class of every opcode: each op's class above
LAYERS: dict[Op, type[Layer]] = {cls.op: cls for cls in Layer.__subclasses__()}
_WIRING = frozenset(f.name for f in fields(Layer))


def layer_for(op: OpParams, inputs: list[int], output: int, name: str = "") -> Layer:
    """The native layer computing ``op`` (an IR node, another layer, ...) with this wiring:
    its parameter fields are copied as they are."""
    cls = LAYERS.get(op.op)
    if cls is None:
        raise FormatError(f"{type(op).__name__} has no native layer")
    params = {f.name: getattr(op, f.name) for f in fields(cls) if f.name not in _WIRING}
    return cls(inputs, output, name, **params)


@dataclass
class NativeModel:
    input_shape: tuple[int, ...]  # NCHW or (N, F)
    layers: list[Layer]
    n_values: int
    input_id: int = 0
    output_id: int = 0
    metadata: dict = field(default_factory=dict)


# ---------------------------------------------------------------- writing


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
        if not isinstance(layer, OpParams):
            raise FormatError(f"unknown layer type {type(layer).__name__}")
        params = layer.encode()
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
        if op not in Op._value2member_map_:
            raise FormatError(f"unknown op code {op}")
        cls = LAYERS[Op(op)]
        layers.append(cls(inputs, output, name, **cls.decode(p)))
        if p.pos != plen:
            raise FormatError(f"layer {name!r}: {plen - p.pos} unexpected parameter bytes")
    if r.pos != len(data):
        raise FormatError("trailing bytes after the last layer")
    return NativeModel(tuple(dims[:rank]), layers, n_values, input_id, output_id, metadata)

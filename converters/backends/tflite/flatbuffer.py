"""Read what a ``.tflite`` flatbuffer contains: operators (builtin and custom), their custom
options, tensors and the file identifier.

A small bounds-checked reader of the TFLite schema (``tensorflow/lite/schema/schema.fbs``)
written against the binary format with ``struct``: it needs neither TensorFlow nor the
``flatbuffers`` package, so the agent and the coordinator can check an artifact without the
converter's heavy dependencies. Custom options (LCE's ops store theirs as a FlexBuffer map) are
decoded with ``flatbuffers.flexbuffers`` where that package is installed.
"""

from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FILE_IDENTIFIER = b"TFL3"

# BuiltinOperator values of the ops a converted CNN uses (schema.fbs; checked against the
# schema shipped with LCE in tests/test_lce_inspect.py). Others are reported as BUILTIN_<n>.
BUILTIN_NAMES: dict[int, str] = {
    0: "ADD",
    1: "AVERAGE_POOL_2D",
    2: "CONCATENATION",
    3: "CONV_2D",
    4: "DEPTHWISE_CONV_2D",
    6: "DEQUANTIZE",
    9: "FULLY_CONNECTED",
    14: "LOGISTIC",
    17: "MAX_POOL_2D",
    18: "MUL",
    19: "RELU",
    20: "RELU_N1_TO_1",
    21: "RELU6",
    22: "RESHAPE",
    25: "SOFTMAX",
    28: "TANH",
    32: "CUSTOM",
    34: "PAD",
    39: "TRANSPOSE",
    40: "MEAN",
    41: "SUB",
    42: "DIV",
    43: "SQUEEZE",
    45: "STRIDED_SLICE",
    53: "CAST",
    55: "MAXIMUM",
    57: "MINIMUM",
    60: "PADV2",
    61: "GREATER",
    62: "GREATER_EQUAL",
    64: "SELECT",
    65: "SLICE",
    74: "SUM",
    83: "PACK",
    105: "REVERSE_V2",
    114: "QUANTIZE",
    123: "SELECT_V2",
    126: "BATCH_MATMUL",
    130: "BROADCAST_TO",
    158: "SIGN",
}
_CUSTOM = 32
LCE_BCONV2D = "LceBconv2d"


class TFLiteFormatError(ValueError):
    """Not a TFLite flatbuffer, or a truncated/corrupt one."""


class _Buf:
    """Bounds-checked little-endian reads of flatbuffer tables, vectors and strings."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def _unpack(self, fmt: str, pos: int) -> Any:
        size = struct.calcsize(fmt)
        if pos < 0 or pos + size > len(self.data):
            raise TFLiteFormatError(
                f"read of {size} bytes at offset {pos} is out of bounds "
                f"(file has {len(self.data)} bytes)"
            )
        return struct.unpack_from(fmt, self.data, pos)[0]

    def u32(self, pos: int) -> int:
        return self._unpack("<I", pos)

    def field_pos(self, table: int, index: int) -> int:
        """Absolute position of field ``index`` of the table at ``table``, 0 when absent."""
        vtable = table - self._unpack("<i", table)
        vt_len = self._unpack("<H", vtable)
        slot = 4 + 2 * index
        if slot + 2 > vt_len:
            return 0
        off = self._unpack("<H", vtable + slot)
        return table + off if off else 0

    def scalar(self, table: int, index: int, fmt: str, default: int = 0) -> int:
        pos = self.field_pos(table, index)
        return self._unpack(fmt, pos) if pos else default

    def ref(self, table: int, index: int) -> int:
        """Position that an offset field points to (table, vector or string), 0 if absent."""
        pos = self.field_pos(table, index)
        return pos + self.u32(pos) if pos else 0

    def vector(self, table: int, index: int) -> tuple[int, int]:
        """(position of the first element, length) of a vector field; (0, 0) if absent."""
        pos = self.ref(table, index)
        if not pos:
            return 0, 0
        n = self.u32(pos)
        return pos + 4, n

    def tables(self, table: int, index: int) -> list[int]:
        start, n = self.vector(table, index)
        return [start + 4 * i + self.u32(start + 4 * i) for i in range(n)]

    def ints(self, table: int, index: int) -> list[int]:
        start, n = self.vector(table, index)
        if n and start + 4 * n > len(self.data):
            raise TFLiteFormatError("int vector runs past the end of the file")
        return list(struct.unpack_from(f"<{n}i", self.data, start)) if n else []

    def bytes_(self, table: int, index: int) -> bytes:
        start, n = self.vector(table, index)
        if start + n > len(self.data):
            raise TFLiteFormatError("byte vector runs past the end of the file")
        return self.data[start : start + n] if n else b""

    def string(self, table: int, index: int) -> str | None:
        pos = self.ref(table, index)
        if not pos:
            return None
        n = self.u32(pos)
        if pos + 4 + n > len(self.data):
            raise TFLiteFormatError("string runs past the end of the file")
        return self.data[pos + 4 : pos + 4 + n].decode("utf-8", errors="replace")


@dataclass
class Operator:
    index: int
    op: str  # builtin name (e.g. CONV_2D) or the custom code (e.g. LceBconv2d)
    custom: bool
    inputs: list[int]
    outputs: list[int]
    output_names: list[str] = field(default_factory=list)
    custom_options: dict[str, Any] | None = None  # decoded FlexBuffer map, when decodable


@dataclass
class TFLiteSummary:
    version: int
    operators: list[Operator]
    tensor_names: list[str]
    tensor_shapes: list[list[int]]
    input_shapes: list[list[int]]
    output_shapes: list[list[int]]

    @property
    def op_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(o.op for o in self.operators).items()))

    def count(self, op: str) -> int:
        return sum(o.op == op for o in self.operators)

    @property
    def custom_ops(self) -> list[str]:
        return sorted({o.op for o in self.operators if o.custom})


def _decode_custom_options(raw: bytes) -> dict[str, Any] | None:
    if not raw:
        return None
    try:
        from flatbuffers import flexbuffers
    except ImportError:  # optional: only the op names are needed for the counts
        return None
    try:
        value = flexbuffers.Loads(raw)
    except Exception:  # options of an op that does not use FlexBuffers
        return None
    return value if isinstance(value, dict) else None


def inspect_tflite(model: bytes | str | Path) -> TFLiteSummary:
    """Parse the main subgraph's operators (in execution order) and tensors."""
    data = model if isinstance(model, bytes | bytearray) else Path(model).read_bytes()
    data = bytes(data)
    if len(data) < 8 or data[4:8] != FILE_IDENTIFIER:
        raise TFLiteFormatError("not a TFLite flatbuffer (file identifier 'TFL3' missing)")
    b = _Buf(data)
    root = b.u32(0)
    version = b.scalar(root, 0, "<I")
    codes = []
    for oc in b.tables(root, 1):  # Model.operator_codes
        deprecated = b.scalar(oc, 0, "<b")
        builtin = b.scalar(oc, 3, "<i")
        code = max(deprecated, builtin)  # schema v3a: the larger of the two is the real one
        custom = b.string(oc, 1)
        if code == _CUSTOM and custom is not None:
            codes.append((custom, True))
        else:
            codes.append((BUILTIN_NAMES.get(code, f"BUILTIN_{code}"), False))
    subgraphs = b.tables(root, 2)  # Model.subgraphs
    if not subgraphs:
        raise TFLiteFormatError("model has no subgraph")
    sg = subgraphs[0]
    tensors = b.tables(sg, 0)
    names = [b.string(t, 3) or "" for t in tensors]
    shapes = [b.ints(t, 0) for t in tensors]
    ops = []
    for i, op in enumerate(b.tables(sg, 3)):  # SubGraph.operators
        idx = b.scalar(op, 0, "<I")
        if idx >= len(codes):
            raise TFLiteFormatError(f"operator {i} uses opcode {idx} of {len(codes)}")
        name, custom = codes[idx]
        outs = b.ints(op, 2)
        ops.append(
            Operator(
                index=i,
                op=name,
                custom=custom,
                inputs=b.ints(op, 1),
                outputs=outs,
                output_names=[names[t] if 0 <= t < len(names) else "" for t in outs],
                custom_options=_decode_custom_options(b.bytes_(op, 5)) if custom else None,
            )
        )

    def shapes_of(ids: list[int]) -> list[list[int]]:
        return [shapes[t] for t in ids if 0 <= t < len(shapes)]

    return TFLiteSummary(
        version=version,
        operators=ops,
        tensor_names=names,
        tensor_shapes=shapes,
        input_shapes=shapes_of(b.ints(sg, 1)),
        output_shapes=shapes_of(b.ints(sg, 2)),
    )

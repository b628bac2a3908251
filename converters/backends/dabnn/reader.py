"""Read a ``.dab`` file back into a :class:`~converters.backends.dabnn.model.DabModel`.

Hand-written accessors over ``flatbuffers.table.Table`` using the slots in
:mod:`converters.backends.dabnn.schema`. Every offset is checked against the buffer, so truncated or
random bytes raise :class:`DabFormatError` instead of reading out of bounds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from flatbuffers import encode, number_types, packer
from flatbuffers.table import Table

from converters.backends.dabnn import schema
from converters.backends.dabnn.model import DabFormatError, DabModel, Input, Layer, Tensor


class _T:
    """A table plus bounds-checked field access."""

    def __init__(self, buf: bytes, pos: int, what: str) -> None:
        if not 0 <= pos <= len(buf) - 4:
            raise DabFormatError(f"{what}: table offset {pos} outside the {len(buf)}-byte file")
        self.buf, self.what = buf, what
        self.t = Table(buf, pos)  # struct.unpack_from on bytes: no copy of the file
        vt = pos - encode.Get(packer.soffset, buf, pos)
        if not 0 <= vt <= len(buf) - 4:
            raise DabFormatError(f"{what}: vtable offset {vt} outside the file")
        vt_len = encode.Get(packer.voffset, buf, vt)
        if vt + vt_len > len(buf) or vt_len < 4:
            raise DabFormatError(f"{what}: vtable of {vt_len} bytes does not fit")

    def _off(self, slot: int) -> int:
        return self.t.Offset(4 + 2 * slot)

    def has(self, slot: int) -> bool:
        return self._off(slot) != 0

    def scalar(self, slot: int, flags: Any, default: Any) -> Any:
        o = self._off(slot)
        if not o:
            return default
        self._need(self.t.Pos + o, flags.bytewidth)
        return self.t.Get(flags, self.t.Pos + o)

    def _need(self, start: int, n: int) -> None:
        if start < 0 or n < 0 or start + n > len(self.buf):
            raise DabFormatError(
                f"{self.what}: {n} bytes at {start} run past the end of the "
                f"{len(self.buf)}-byte file"
            )

    def _vec(self, slot: int, elem: int) -> tuple[int, int] | None:
        o = self._off(slot)
        if not o:
            return None
        self._need(self.t.Pos + o, 4)
        start = self.t.Vector(o)
        self._need(start - 4, 4)
        n = self.t.VectorLen(o)
        self._need(start, n * elem)
        return start, n

    def string(self, slot: int) -> str | None:
        o = self._off(slot)
        if not o:
            return None
        self._need(self.t.Pos + o, 4)
        start = self.t.Pos + o + encode.Get(packer.uoffset, self.buf, self.t.Pos + o)
        self._need(start, 4)
        n = encode.Get(packer.uoffset, self.buf, start)
        self._need(start + 4, n)
        try:
            return bytes(self.buf[start + 4 : start + 4 + n]).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DabFormatError(f"{self.what}: string is not UTF-8") from exc

    def numbers(self, slot: int, dtype: str) -> np.ndarray | None:
        dt = np.dtype(dtype)
        v = self._vec(slot, dt.itemsize)
        if v is None:
            return None
        start, n = v
        return np.frombuffer(self.buf, dtype=dt, count=n, offset=start).copy()

    def tables(self, slot: int, what: str) -> list[_T]:
        v = self._vec(slot, 4)
        if v is None:
            return []
        start, n = v
        out = []
        for j in range(n):
            at = start + 4 * j
            out.append(_T(self.buf, at + encode.Get(packer.uoffset, self.buf, at), f"{what}[{j}]"))
        return out

    def strings(self, slot: int) -> list[str] | None:
        v = self._vec(slot, 4)
        if v is None:
            return None
        start, n = v
        out = []
        for j in range(n):
            at = start + 4 * j
            s = at + encode.Get(packer.uoffset, self.buf, at)
            self._need(s, 4)
            ln = encode.Get(packer.uoffset, self.buf, s)
            self._need(s + 4, ln)
            out.append(bytes(self.buf[s + 4 : s + 4 + ln]).decode("utf-8", "replace"))
        return out

    def table(self, slot: int, what: str) -> _T | None:
        o = self._off(slot)
        if not o:
            return None
        at = self.t.Pos + o
        self._need(at, 4)
        return _T(self.buf, at + encode.Get(packer.uoffset, self.buf, at), what)


def _layer(t: _T, index: int) -> Layer:
    lf = schema.LAYER_FIELDS
    code = t.scalar(schema.slot(lf, "type"), number_types.Int8Flags, 0)
    if not 0 <= code < len(schema.LAYER_TYPES):
        raise DabFormatError(f"layer {index}: unknown layer type {code}")
    ltype = schema.LAYER_TYPES[code]
    name = t.string(schema.slot(lf, "name")) or ""
    p = t.table(schema.slot(lf, schema.PARAM_FIELD[ltype]), f"layer {index} ({ltype}) param")
    if p is None:
        raise DabFormatError(
            f"layer {index} ({ltype}, {name!r}): its {schema.PARAM_FIELD[ltype]} is missing"
        )
    params: dict[str, Any] = {}
    for i, (fname, kind) in enumerate(schema.PARAM_TABLES[ltype]):
        if kind == "string":
            v: Any = p.string(i)
        elif kind == "[int]":
            arr = p.numbers(i, "<i4")
            v = None if arr is None else [int(x) for x in arr]
        elif kind == "[string]":
            v = p.strings(i)
        else:
            v = p.scalar(i, number_types.Int32Flags, 0) if p.has(i) else None
        if v is not None:
            params[fname] = v
    return Layer(ltype, params, name)


def _tensor(t: _T) -> Tensor:
    f = schema.TENSOR_FIELDS
    dtype = t.scalar(schema.slot(f, "data_type"), number_types.Int8Flags, 0)
    if dtype not in (schema.FLOAT32, schema.BIT):
        raise DabFormatError(f"{t.what}: unknown data type {dtype}")
    shape = t.numbers(schema.slot(f, "shape"), "<u4")
    name = t.string(schema.slot(f, "name"))
    if shape is None or name is None:
        raise DabFormatError(f"{t.what}: tensor without shape or name")
    return Tensor(
        name=name,
        data_type=int(dtype),
        shape=tuple(int(s) for s in shape),
        float32_data=t.numbers(schema.slot(f, "float32_data"), "<f4"),
        bin_data=(
            None
            if (w := t.numbers(schema.slot(f, "bin_data"), "<u8")) is None
            else w.astype(np.uint64)
        ),
        align_hwc_to_128=bool(
            t.scalar(schema.slot(f, "align_hwc_to_128"), number_types.BoolFlags, False)
        ),
    )


def loads(data: bytes) -> DabModel:
    buf = bytes(data)
    if len(buf) < 8:
        raise DabFormatError(f"{len(buf)} bytes is too short for a FlatBuffers model")
    root = _T(buf, encode.Get(packer.uoffset, buf, 0), "Model")
    mf = schema.MODEL_FIELDS
    try:
        layers = [
            _layer(t, i) for i, t in enumerate(root.tables(schema.slot(mf, "layers"), "layers"))
        ]
        tensors = [_tensor(t) for t in root.tables(schema.slot(mf, "initializers"), "initializers")]
        inputs = []
        for t in root.tables(schema.slot(mf, "inputs"), "inputs"):
            shape = t.numbers(schema.slot(schema.INPUT_FIELDS, "shape"), "<u4")
            name = t.string(schema.slot(schema.INPUT_FIELDS, "name"))
            if shape is None or name is None:
                raise DabFormatError(f"{t.what}: input without shape or name")
            inputs.append(Input(name, tuple(int(s) for s in shape)))
        version = int(root.scalar(schema.slot(mf, "version"), number_types.Uint32Flags, 0))
    except DabFormatError:
        raise
    except (IndexError, ValueError, OverflowError) as exc:  # e.g. a count that wraps
        raise DabFormatError(f"malformed FlatBuffers data: {exc}") from exc
    return DabModel(layers, tensors, inputs, version)


def read_dab(path: str | Path | bytes) -> DabModel:
    """Parse a ``.dab`` file (or its bytes) into a :class:`DabModel`."""
    data = path if isinstance(path, bytes | bytearray) else Path(path).read_bytes()
    return loads(bytes(data))

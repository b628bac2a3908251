"""Serialise a :class:`~converters.backends.dabnn.model.DabModel` to daBNN's FlatBuffers format
with the ``flatbuffers`` package's Builder (hand-written calls against ``dab.fbs``; slots come from
:mod:`converters.backends.dabnn.schema`)."""

from __future__ import annotations

from typing import Any

import flatbuffers
import numpy as np

from converters.backends.dabnn import schema
from converters.backends.dabnn.model import DabModel, Input, Layer, Tensor


def _vector_of_offsets(b: flatbuffers.Builder, offsets: list[int]) -> int:
    b.StartVector(4, len(offsets), 4)
    for off in reversed(offsets):  # FlatBuffers builds back to front
        b.PrependUOffsetTRelative(off)
    return b.EndVector()


def _param(b: flatbuffers.Builder, layer: Layer) -> int:
    fields = schema.PARAM_TABLES[layer.type]
    unknown = set(layer.params) - {f for f, _ in fields}
    if unknown:
        raise ValueError(f"layer {layer.name!r} ({layer.type}): unknown fields {sorted(unknown)}")
    made: dict[int, tuple[str, Any]] = {}
    for i, (fname, kind) in enumerate(fields):
        value = layer.params.get(fname)
        if value is None:
            continue
        if kind == "string":
            if value == "":
                continue  # absent, as daBNN's converter leaves an unused bias
            made[i] = ("off", b.CreateString(str(value)))
        elif kind == "[int]":
            made[i] = ("off", b.CreateNumpyVector(np.asarray(value, np.int32)))
        elif kind == "[string]":
            made[i] = ("off", _vector_of_offsets(b, [b.CreateString(str(s)) for s in value]))
        elif kind == "int":
            made[i] = ("int", int(value))
    b.StartObject(len(fields))
    for i, (how, v) in made.items():
        if how == "off":
            b.PrependUOffsetTRelativeSlot(i, v, 0)
        else:
            b.PrependInt32Slot(i, v, 0)
    return b.EndObject()


def _layer(b: flatbuffers.Builder, layer: Layer) -> int:
    param = _param(b, layer)
    name = b.CreateString(layer.name) if layer.name else None
    b.StartObject(len(schema.LAYER_FIELDS))
    b.PrependInt8Slot(schema.slot(schema.LAYER_FIELDS, "type"), schema.LAYER_TYPE[layer.type], 0)
    b.PrependUOffsetTRelativeSlot(
        schema.slot(schema.LAYER_FIELDS, schema.PARAM_FIELD[layer.type]), param, 0
    )
    if name is not None:
        b.PrependUOffsetTRelativeSlot(schema.slot(schema.LAYER_FIELDS, "name"), name, 0)
    return b.EndObject()


def _tensor(b: flatbuffers.Builder, t: Tensor) -> int:
    f = schema.TENSOR_FIELDS
    bin_data = f32 = None
    if t.data_type == schema.BIT:
        bin_data = b.CreateNumpyVector(np.ascontiguousarray(t.bin_data, np.uint64))
    else:
        f32 = b.CreateNumpyVector(np.ascontiguousarray(t.float32_data, np.float32).reshape(-1))
    shape = b.CreateNumpyVector(np.asarray(t.shape, np.uint32))
    name = b.CreateString(t.name)
    b.StartObject(len(f))
    b.PrependInt8Slot(schema.slot(f, "data_type"), t.data_type, 0)
    if bin_data is not None:
        b.PrependUOffsetTRelativeSlot(schema.slot(f, "bin_data"), bin_data, 0)
    if f32 is not None:
        b.PrependUOffsetTRelativeSlot(schema.slot(f, "float32_data"), f32, 0)
    b.PrependUOffsetTRelativeSlot(schema.slot(f, "shape"), shape, 0)
    b.PrependUOffsetTRelativeSlot(schema.slot(f, "name"), name, 0)
    b.PrependBoolSlot(schema.slot(f, "align_hwc_to_128"), bool(t.align_hwc_to_128), False)
    return b.EndObject()


def _input(b: flatbuffers.Builder, inp: Input) -> int:
    shape = b.CreateNumpyVector(np.asarray(inp.shape, np.uint32))
    name = b.CreateString(inp.name)
    b.StartObject(len(schema.INPUT_FIELDS))
    b.PrependUOffsetTRelativeSlot(schema.slot(schema.INPUT_FIELDS, "shape"), shape, 0)
    b.PrependUOffsetTRelativeSlot(schema.slot(schema.INPUT_FIELDS, "name"), name, 0)
    return b.EndObject()


def dumps(model: DabModel) -> bytes:
    size = sum(
        (t.bin_data.nbytes if t.bin_data is not None else 0)
        + (t.float32_data.nbytes if t.float32_data is not None else 0)
        for t in model.initializers
    )
    b = flatbuffers.Builder(size + 65536)
    layers = _vector_of_offsets(b, [_layer(b, layer) for layer in model.layers])
    tensors = _vector_of_offsets(b, [_tensor(b, t) for t in model.initializers])
    inputs = _vector_of_offsets(b, [_input(b, i) for i in model.inputs])
    f = schema.MODEL_FIELDS
    b.StartObject(len(f))
    b.PrependUOffsetTRelativeSlot(schema.slot(f, "layers"), layers, 0)
    b.PrependUOffsetTRelativeSlot(schema.slot(f, "initializers"), tensors, 0)
    b.PrependUOffsetTRelativeSlot(schema.slot(f, "inputs"), inputs, 0)
    b.PrependUint32Slot(schema.slot(f, "version"), int(model.version), 0)
    b.Finish(b.EndObject())
    return bytes(b.Output())

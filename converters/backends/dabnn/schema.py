"""The daBNN schema (``dab.fbs`` next to this file) as Python tables.

FlatBuffers addresses a table's fields by position (slot ``i`` lives at vtable offset
``4 + 2·i``), so the writer and the reader only need each table's field names in order and
each field's kind. :func:`parse_fbs` reads ``dab.fbs`` so a test can check these tables
against the schema file instead of trusting two hand-kept copies.
"""

from __future__ import annotations

import re
from pathlib import Path

SCHEMA_PATH = Path(__file__).with_name("dab.fbs")
MODEL_VERSION = 2  # BNN_LATEST_MODEL_VERSION in daBNN's common/macros.h

# enum DataType:byte
FLOAT32 = 0
BIT = 1
DATA_TYPES = ("Float32", "Bit")

# enum LayerType:byte, in value order
LAYER_TYPES = (
    "FpConv2D",
    "AvePool",
    "MaxPool",
    "Relu",
    "Softmax",
    "FC",
    "Add",
    "Concat",
    "BinConv2D",
    "Affine",
    "Binarize",
    "Split",
    "Shuffle",
    "PRelu",
)
LAYER_TYPE = {name: i for i, name in enumerate(LAYER_TYPES)}

# what daBNN's Net::prepare() builds; anything else throws "Not supported op"
RUNTIME_LAYERS = frozenset(
    {
        "FpConv2D",
        "BinConv2D",
        "Affine",
        "Add",
        "MaxPool",
        "AvePool",
        "Concat",
        "Relu",
        "Split",
        "Shuffle",
        "PRelu",
    }
)
# layers whose output aliases their (first) input's buffer in a release build of daBNN
IN_PLACE_LAYERS = frozenset({"Affine", "Add", "Relu", "PRelu", "Shuffle"})

# field kinds: "string", "[int]" (int32), "[string]", "int" (int32)
_CONV = (
    ("input", "string"),
    ("weight", "string"),
    ("bias", "string"),
    ("pads", "[int]"),
    ("strides", "[int]"),
    ("dilations", "[int]"),
    ("output", "string"),
)
_POOL = (
    ("input", "string"),
    ("kernel_shape", "[int]"),
    ("pads", "[int]"),
    ("strides", "[int]"),
    ("output", "string"),
)
_UNARY = (("input", "string"), ("output", "string"))

PARAM_TABLES: dict[str, tuple[tuple[str, str], ...]] = {
    "FpConv2D": _CONV,
    "AvePool": _POOL,
    "MaxPool": _POOL,
    "Relu": _UNARY,
    "Softmax": _UNARY,
    "FC": (("input", "string"), ("weight", "string"), ("bias", "string"), ("output", "string")),
    "Add": (("input1", "string"), ("input2", "string"), ("output", "string")),
    "Concat": (("inputs", "[string]"), ("axis", "int"), ("output", "string")),
    "BinConv2D": _CONV,
    "Affine": (("input", "string"), ("a", "string"), ("b", "string"), ("output", "string")),
    "Binarize": _UNARY,
    "Split": (("input", "string"), ("outputs", "[string]")),
    "Shuffle": _UNARY,
    "PRelu": (("input", "string"), ("slope", "string"), ("output", "string")),
}

# table Layer: slot order. Each layer type has its own param field; name sits between
# shuffle_param and prelu_param because PRelu was appended to the schema later.
LAYER_FIELDS = (
    "type",
    "fp_conv2d_param",
    "bin_conv2d_param",
    "avepool_param",
    "maxpool_param",
    "relu_param",
    "softmax_param",
    "fc_param",
    "add_param",
    "concat_param",
    "affine_param",
    "binarize_param",
    "split_param",
    "shuffle_param",
    "name",
    "prelu_param",
)
PARAM_FIELD = {
    "FpConv2D": "fp_conv2d_param",
    "BinConv2D": "bin_conv2d_param",
    "AvePool": "avepool_param",
    "MaxPool": "maxpool_param",
    "Relu": "relu_param",
    "Softmax": "softmax_param",
    "FC": "fc_param",
    "Add": "add_param",
    "Concat": "concat_param",
    "Affine": "affine_param",
    "Binarize": "binarize_param",
    "Split": "split_param",
    "Shuffle": "shuffle_param",
    "PRelu": "prelu_param",
}
TENSOR_FIELDS = ("data_type", "bin_data", "float32_data", "shape", "name", "align_hwc_to_128")
INPUT_FIELDS = ("shape", "name")
MODEL_FIELDS = ("layers", "initializers", "inputs", "version")


def slot(fields: tuple[str, ...], name: str) -> int:
    return fields.index(name)


def parse_fbs(text: str) -> dict[str, dict[str, list[str]]]:
    """Minimal reader of a FlatBuffers schema: ``{"enums": {name: [values]}, "tables":
    {name: [field names in order]}}`` (enough to check slot positions)."""
    text = re.sub(r"//[^\n]*", "", text)
    enums = {
        m.group(1): [v.split("=")[0].strip() for v in m.group(2).split(",") if v.strip()]
        for m in re.finditer(r"enum\s+(\w+)\s*:\s*\w+\s*\{([^}]*)\}", text)
    }
    tables = {
        m.group(1): [f.split(":")[0].strip() for f in m.group(2).split(";") if f.strip()]
        for m in re.finditer(r"table\s+(\w+)\s*\{([^}]*)\}", text)
    }
    return {"enums": enums, "tables": tables}

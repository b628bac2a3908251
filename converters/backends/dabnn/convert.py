"""IR → ``.dab`` file: lowered (lower.py), serialised (writer.py), read back and checked against
daBNN's runtime rules (check.py) before it is written."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from converters import ir
from converters.backends.dabnn.check import check_model
from converters.backends.dabnn.lower import CONVERTER_NAME, CONVERTER_VERSION, lower
from converters.backends.dabnn.reader import loads
from converters.backends.dabnn.writer import dumps

HARDTANH_NOTE = (
    "Hardtanh/Clip has no daBNN layer. Where only its sign is used (all readers are binary "
    "convs) it is dropped, which is exact; elsewhere it is computed exactly as "
    "hi - relu((hi - lo) - relu(x - lo)) with daBNN's Relu and Affine layers (up to 4 extra "
    "element-wise passes per clip, counted in extra_layers; they add latency a fused "
    "Hardtanh would not)."
)


def convert_dabnn(graph: ir.Graph, out_path: str | Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Write ``graph`` as a daBNN model to ``out_path`` and return the conversion summary.

    Raises :class:`converters.errors.UnsupportedModelError` (naming the node) for what daBNN
    cannot run: binary convs whose input channels are not a multiple of 64, thresholds
    (ReAct), non-square kernels or maps, asymmetric padding, padded average pooling."""
    lowered = lower(graph)
    data = dumps(lowered.model)
    check_model(loads(data))  # what daBNN will parse is what was checked
    Path(out_path).write_bytes(data)
    rep = lowered.report
    return {
        "library": "dabnn",
        "format": "daBNN .dab (FlatBuffers, schema flatbnn, version 2)",
        "size_bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "converter": CONVERTER_NAME,
        "converter_version": CONVERTER_VERSION,
        "padding_mode": "minus_one",
        "hardtanh": {
            "mode": "exact (dropped where sign-only, else Relu/Affine)",
            "note": HARDTANH_NOTE,
            **rep["clips"],
        },
        "threads": "daBNN is single-threaded",
        "source": dict(meta),
        **{k: v for k, v in rep.items() if k != "clips"},
    }


convert = convert_dabnn  # the back-end entry point (converters/backends/__init__.py)

"""ONNX front end: an ONNX file (or an archive of one) in, :mod:`converters.ir` out.

The stages, one module each:

1. :mod:`~converters.frontend.archive` — an upload that is a ``.zip``/``.tar[.gz]`` holding
   one ``.onnx`` and its external data is unpacked safely.
2. :mod:`~converters.frontend.load` — ``load_onnx`` parses the file, loads external data from
   next to it and runs ``onnx.checker`` (anything unparsable or invalid is a
   :class:`MalformedModelError`); model-local functions are inlined, a symbolic batch
   dimension is fixed to 1 and shapes are inferred (strict mode).
3. :mod:`~converters.frontend.simplify` — ``simplify_graph`` removes what training code leaves
   in an export: Identity nodes, straight-through estimators ``(s − y) + y`` (read as ``s``),
   and nodes no output needs.
4. :mod:`~converters.frontend.fold` — ``fold_constants`` evaluates, once, every node whose
   inputs are all constant (``Sign(W)``, ``Mul(ReduceMean(Abs(W)), Sign(W))``, shape
   arithmetic ...).
5. :mod:`~converters.frontend.lower` — the remaining nodes are matched into IR nodes; what the
   IR cannot represent is refused with an :class:`UnsupportedModelError` naming the node and op.

:func:`model_file` gives the plain ``.onnx`` path for an upload (archive unpacked, local
functions inlined) for code that reads the model by name, such as onnxruntime in verification.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from converters import ir
from converters.errors import UnsupportedModelError
from converters.frontend.archive import (
    MAX_ARCHIVE_BYTES,
    archive_kind,
    check_model_archive,
    external_data_locations,
    extract_model_archive,
)
from converters.frontend.fold import fold_constants
from converters.frontend.load import (
    fix_batch_dim,
    graph_input,
    infer_shapes,
    inline_functions,
    load_onnx,
    model_file,
    opset_of,
)
from converters.frontend.lower import Lowering, check_supported
from converters.frontend.simplify import simplify_graph


def to_ir(model: Any) -> ir.Graph:
    """Match a checked ``onnx.ModelProto`` into the IR (the model's batch dim may be edited)."""
    from onnx import TensorProto

    opset = opset_of(model)
    model, notes = inline_functions(model)
    notes += fix_batch_dim(model)
    inferred, shapes = infer_shapes(model)
    notes += simplify_graph(inferred.graph, shapes)
    nodes, consts, folded = fold_constants(inferred.graph, shapes, opset)
    # an op we cannot convert at all is the most useful thing to report, so look first
    check_supported(nodes)
    inp = graph_input(inferred)
    if inp.type.tensor_type.elem_type != TensorProto.FLOAT:
        raise UnsupportedModelError(f"graph input {inp.name!r} must be float32")
    in_shape = shapes.get(inp.name)
    if in_shape is None or len(in_shape) not in (2, 4):
        raise UnsupportedModelError(
            f"graph input {inp.name!r} must be NCHW or N×F with static dims, got {in_shape}"
        )
    graph = Lowering(inferred.graph, nodes, consts, shapes, opset).build(inp.name, tuple(in_shape))
    graph.metadata = {p.key: p.value for p in model.metadata_props}
    graph.notes = notes + [f"{len(folded)} constant node(s) folded"]
    return graph


def load_ir(path: str | Path) -> ir.Graph:
    """Load, check and match an ONNX file (or an archive of one) into the IR."""
    return to_ir(load_onnx(path))


__all__ = [
    "MAX_ARCHIVE_BYTES",
    "archive_kind",
    "check_model_archive",
    "external_data_locations",
    "extract_model_archive",
    "load_ir",
    "load_onnx",
    "model_file",
    "to_ir",
]

"""Constant folding: every node whose inputs are all initializers or constants is evaluated
once (``Sign(W)``, ``Mul(ReduceMean(Abs(W)), Sign(W))``, Constant nodes, shape arithmetic ...),
with numpy for common ops and ``onnx.reference`` for the rest."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from converters.errors import (
    ConversionError,
    MalformedModelError,
    UnsupportedModelError,
    first_line,
)

# nondeterministic ops must not be folded even with constant inputs
_NO_FOLD = {"RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}


def node_attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


class _Fallback(Exception):
    """The numpy evaluator does not handle this case; use onnx.reference."""


def _axes(a: dict, inputs: list, idx: int) -> list[int] | None:
    if "axes" in a:
        return [int(v) for v in a["axes"]]
    if len(inputs) > idx and inputs[idx] is not None:
        return [int(v) for v in np.asarray(inputs[idx]).reshape(-1)]
    return None


def _reduce(fn: Callable) -> Callable:
    def run(a: dict, *inputs: np.ndarray) -> np.ndarray:
        x = inputs[0]
        axes = _axes(a, list(inputs), 1)
        if not axes:
            if a.get("noop_with_empty_axes", 0):
                return x.copy()
            axes = list(range(x.ndim))
        keep = bool(a.get("keepdims", 1))
        return fn(x, axis=tuple(axes), keepdims=keep, dtype=np.float64).astype(x.dtype)

    return run


def _same_dtype(fn: Callable) -> Callable:
    def run(a: dict, *inputs: np.ndarray) -> np.ndarray:
        return np.asarray(fn(*inputs)).astype(inputs[0].dtype)

    return run


def _div(a: dict, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    if not np.issubdtype(x.dtype, np.floating):
        raise _Fallback  # integer Div truncates; let the reference implementation decide
    return (x / y).astype(x.dtype)


def _reshape(a: dict, x: np.ndarray, shape: np.ndarray) -> np.ndarray:
    target = [int(s) for s in shape.reshape(-1)]
    if not a.get("allowzero", 0):
        target = [x.shape[i] if s == 0 else s for i, s in enumerate(target)]
    return x.reshape(target)


def _unsqueeze(a: dict, *inputs: np.ndarray) -> np.ndarray:
    x = inputs[0]
    axes = _axes(a, list(inputs), 1) or []
    rank = x.ndim + len(axes)
    for ax in sorted(v % rank for v in axes):
        x = np.expand_dims(x, ax)
    return x


def _squeeze(a: dict, *inputs: np.ndarray) -> np.ndarray:
    x = inputs[0]
    axes = _axes(a, list(inputs), 1)
    return np.squeeze(x) if axes is None else np.squeeze(x, axis=tuple(v % x.ndim for v in axes))


def _cast(a: dict, x: np.ndarray) -> np.ndarray:
    from onnx import helper

    return x.astype(helper.tensor_dtype_to_np_dtype(a["to"]))


def _transpose(a: dict, x: np.ndarray) -> np.ndarray:
    return np.transpose(x, a.get("perm"))


_NUMPY_OPS: dict[str, Callable] = {
    "Sign": _same_dtype(np.sign),
    "Abs": _same_dtype(np.abs),
    "Neg": _same_dtype(np.negative),
    "Sqrt": _same_dtype(np.sqrt),
    "Reciprocal": _same_dtype(np.reciprocal),
    "Add": _same_dtype(np.add),
    "Sub": _same_dtype(np.subtract),
    "Mul": _same_dtype(np.multiply),
    "Div": _div,
    "Identity": lambda a, x: x.copy(),
    "ReduceMean": _reduce(np.mean),
    "ReduceSum": _reduce(np.sum),
    "Reshape": _reshape,
    "Transpose": _transpose,
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Cast": _cast,
}


def _eval_reference(node: Any, inputs: list[np.ndarray | None], opset: int) -> list[np.ndarray]:
    from onnx import TypeProto, helper
    from onnx.reference import ReferenceEvaluator

    vis, feeds = [], {}
    for name, arr in zip(node.input, inputs, strict=True):
        if arr is None or not name or name in feeds:
            continue
        dtype = helper.np_dtype_to_tensor_dtype(arr.dtype)
        vis.append(helper.make_tensor_value_info(name, dtype, arr.shape))
        feeds[name] = arr
    outs = [helper.make_value_info(o, TypeProto()) for o in node.output if o]
    model = helper.make_model(
        helper.make_graph([node], "fold", vis, outs),
        opset_imports=[helper.make_opsetid("", opset)],
    )
    results = ReferenceEvaluator(model).run(None, feeds)
    return [np.asarray(r) for r in results]


def _eval_node(node: Any, inputs: list[np.ndarray | None], opset: int) -> list[np.ndarray]:
    fn = _NUMPY_OPS.get(node.op_type)
    if fn is not None and len(node.output) == 1:
        try:
            return [fn(node_attrs(node), *[i for i in inputs if i is not None])]
        except _Fallback:
            pass
    return _eval_reference(node, inputs, opset)


def _constant_value(node: Any) -> np.ndarray:
    from onnx import numpy_helper

    a = node_attrs(node)
    if "value" in a:
        return numpy_helper.to_array(a["value"])
    for key, dtype in (
        ("value_float", np.float32),
        ("value_floats", np.float32),
        ("value_int", np.int64),
        ("value_ints", np.int64),
    ):
        if key in a:
            return np.array(a[key], dtype=dtype)
    raise _Fallback


def fold_constants(
    graph: Any, shapes: dict[str, tuple[int, ...] | None], opset: int
) -> tuple[list[Any], dict[str, np.ndarray], list[str]]:
    """Evaluate every node whose inputs are all constant.

    Returns the nodes left to convert, the constant values by name (initializers included) and
    the names of the folded nodes."""
    from onnx import numpy_helper

    consts: dict[str, np.ndarray] = {}
    for t in graph.initializer:
        try:
            consts[t.name] = numpy_helper.to_array(t)
        except (ValueError, TypeError) as exc:  # raw_data that does not fit its dims
            raise MalformedModelError(
                f"initializer {t.name!r}: its data does not match its shape "
                f"{list(t.dims)}: {first_line(exc)}"
            ) from None
    remaining, folded = [], []
    for node in graph.node:
        if node.domain not in ("", "ai.onnx"):
            remaining.append(node)  # refused later with the node's name
            continue
        ins = [i for i in node.input if i]
        try:
            if node.op_type == "Constant":
                try:
                    values = [_constant_value(node)]
                except _Fallback:
                    values = _eval_reference(node, [], opset)
            elif node.op_type == "Shape" and shapes.get(node.input[0]) is not None:
                # activation shapes are static once the batch is fixed; torch's flatten
                # idiom (Shape→Gather→Concat→Reshape) folds away through this
                shp = np.array(shapes[node.input[0]], dtype=np.int64)
                a = node_attrs(node)
                values = [shp[a.get("start", 0) : a.get("end", len(shp))]]
            elif ins and all(i in consts for i in ins) and node.op_type not in _NO_FOLD:
                values = _eval_node(node, [consts[i] if i else None for i in node.input], opset)
            else:
                remaining.append(node)
                continue
        except ConversionError:
            raise
        except Exception as exc:
            raise UnsupportedModelError(
                f"could not evaluate this constant subgraph: {first_line(exc)}",
                node.name,
                node.op_type,
            ) from exc
        for name, value in zip(node.output, values, strict=False):
            if name:
                consts[name] = np.asarray(value)
        folded.append(node.name)
    return remaining, consts, folded

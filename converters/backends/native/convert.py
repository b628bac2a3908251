"""IR → native ``.bnn`` model (FORMAT.md) through ``native.format``.

IR nodes and native layers share their op classes, so a node becomes a layer by copying its
fields (``nf.layer_for``): this module only numbers the values and picks the layer order."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from converters import ir
from native import format as nf

CONVERTER_NAME = "bnnbench-converters"
CONVERTER_VERSION = "0.1.0"


def execution_order(graph: ir.Graph) -> list[ir.Node]:
    """The graph's nodes in the order the engine should run them: a topological order that
    keeps producer and consumer next to each other wherever it can.

    The engine fuses only adjacent layers (native/src/fuse.c): a binary conv hands its bits
    to the next binary conv through the clip between them, and a residual Add (and its
    clip) runs in the epilogue of the binary conv right before it. In a ResNet stage's first
    block the graph's own order puts the FP32 downsample conv between the block's second
    binary conv and its Add, which breaks the second pattern; moving that conv after the
    first binary conv would break the first. So the list is built greedily: among the
    nodes whose inputs exist, one that reads the node just placed comes first (the chain
    goes on), and among those, or among all when none does, a node other than a binary conv
    (side work such as the downsample conv, done before the chain it would interrupt), the
    graph's order breaking ties. Every layer computes exactly what it did."""
    remaining = list(graph.nodes)
    have = {graph.input}
    order: list[ir.Node] = []
    while remaining:
        ready = [n for n in remaining if all(i in have for i in n.inputs)]
        if not ready:  # not a DAG over known values: leave the rest as it is
            order += remaining
            break
        follow = [n for n in ready if order and order[-1].output in n.inputs]
        pool = follow or ready
        pick = next((n for n in pool if not isinstance(n, ir.BinConv)), pool[0])
        order.append(pick)
        remaining.remove(pick)
        have.add(pick.output)
    return order


def to_native_model(graph: ir.Graph, metadata: dict | None = None) -> nf.NativeModel:
    """Assign value ids in execution order (input = 0) and build the layer list."""
    ids = {graph.input: 0}
    layers = []
    for n in execution_order(graph):
        ins = [ids[i] for i in n.inputs]
        ids[n.output] = len(ids)
        layers.append(nf.layer_for(n, ins, ids[n.output], n.name))
    meta = {
        "converter": CONVERTER_NAME,
        "converter_version": CONVERTER_VERSION,
        "padding_mode": "zero",
        **(metadata or {}),
    }
    return nf.NativeModel(
        input_shape=tuple(int(d) for d in graph.input_shape),
        layers=layers,
        n_values=len(ids),
        input_id=0,
        output_id=ids[graph.output],
        metadata=meta,
    )


def write_native(graph: ir.Graph, out_path: str | Path, metadata: dict | None = None) -> bytes:
    """Write the model; returns the bytes written (for hashing)."""
    data = nf.dumps(to_native_model(graph, metadata))
    Path(out_path).write_bytes(data)
    return data


def convert(graph: ir.Graph, out_path: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """The back-end entry point (converters/backends/__init__.py)."""
    data = write_native(graph, out_path, meta)
    return {
        "size_bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "padding_mode": "zero",
        "converter": CONVERTER_NAME,
        "converter_version": CONVERTER_VERSION,
    }

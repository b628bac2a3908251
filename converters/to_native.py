"""IR → native ``.bnn`` model (FORMAT.md) through ``native.format``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from converters import ir
from native import format as nf

CONVERTER_NAME = "bnnbench-converters"
CONVERTER_VERSION = "0.1.0"


def _layer(n: ir.Node, ins: list[int], out: int) -> nf.Layer:
    base = {"inputs": ins, "output": out, "name": n.name}
    if isinstance(n, ir.Conv):
        return nf.Conv2dF32(**base, weight=n.weight, bias=n.bias, strides=n.strides, pads=n.pads)
    if isinstance(n, ir.BinConv):
        return nf.Conv2dBin(**base, weight_sign=n.weight_sign, scale=n.scale, bias=n.bias,
                            threshold=n.threshold, strides=n.strides, pads=n.pads)
    if isinstance(n, ir.Affine):
        return nf.Affine(**base, scale=n.scale, bias=n.bias)
    if isinstance(n, ir.Clip):
        return nf.Clip(**base, min=float(n.min), max=float(n.max))
    if isinstance(n, ir.MaxPool):
        return nf.MaxPool(**base, kernel=n.kernel, strides=n.strides, pads=n.pads)
    if isinstance(n, ir.AvgPool):
        return nf.AvgPool(**base, kernel=n.kernel, strides=n.strides, pads=n.pads,
                          count_include_pad=n.count_include_pad)
    if isinstance(n, ir.GlobalAvgPool):
        return nf.GlobalAvgPool(**base)
    if isinstance(n, ir.Add):
        return nf.Add(**base)
    if isinstance(n, ir.Flatten):
        return nf.Flatten(**base)
    if isinstance(n, ir.Gemm):
        return nf.Gemm(**base, weight=n.weight, bias=n.bias)
    raise TypeError(f"IR node {n.name!r} of kind {n.kind} has no native layer")


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
        layers.append(_layer(n, ins, ids[n.output]))
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


def weight_bytes(graph: ir.Graph) -> dict[str, int]:
    """Parameter storage in the native file, split by kind (for the summary)."""
    fp = binary = 0
    for n in graph.nodes:
        if isinstance(n, ir.BinConv):
            words = (n.in_c + 63) // 64
            binary += 8 * n.out_c * n.kernel[0] * n.kernel[1] * words
            fp += 4 * (n.scale.size + n.bias.size + (0 if n.threshold is None else n.in_c))
        else:
            for attr in ("weight", "bias", "scale"):
                v = getattr(n, attr, None)
                if isinstance(v, np.ndarray):
                    fp += 4 * v.size
    return {"fp32_bytes": fp, "binary_bytes": binary}

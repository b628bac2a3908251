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
    """The graph's nodes in the order the engine should run them: the graph's own order, but
    each binary conv whose one reader is an Add moved to just before that Add.

    The engine folds a residual Add into the epilogue of a binary conv only when the Add
    follows the conv (native/src/fuse.c); in a ResNet stage's first block the FP32
    downsample conv otherwise sits between the two, and the Add costs a pass of its own.
    The conv moves only past nodes that do not read its output, so the order stays
    topological and every layer computes exactly what it did."""
    order = list(graph.nodes)
    for node in [n for n in graph.nodes if isinstance(n, ir.BinConv)]:
        if node.output == graph.output:
            continue
        readers = [j for j, n in enumerate(order) if node.output in n.inputs]
        i = order.index(node)
        if len(readers) == 1 and isinstance(order[readers[0]], ir.Add) and readers[0] > i + 1:
            order.insert(readers[0] - 1, order.pop(i))
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

"""Model analysis: which layers are binarized and why, parameter/operation counts, and the
theoretical-complexity track of BiBench (paper §3.2 ⑤, Eq. 7–8).

Conventions (also in docs/converters.md):

* **FLOPs = multiply-accumulates (MACs)** of convolutions and fully connected layers, the
  convention under which ResNet-18 at 224² is "1.8 GFLOPs". Element-wise work (BatchNorm,
  clip, pooling, residual adds, the binary conv's scale/bias) is reported separately as
  ``elementwise_ops`` and not part of FLOPs, as in the paper's counts.
* **BOPs** = binary MACs (1-bit × 1-bit) of the binary convolutions.
* A binary conv stores its weights as 1-bit parameters; its per-channel scale, bias and
  threshold stay FP32. BatchNorm folded into a conv counts as that conv's bias/scale.
* Totals (``params_total``, ``flops_total``) are what the same network costs entirely in
  FP32: every binary weight counted as an FP32 parameter and every BOP as a FLOP.
* compression = params_total / (params_bin/32 + params_fp);
  speedup = flops_total / (bops/64 + flops_fp); OM = sqrt((speedup² + compression²)/2).
  A valid model may have no parameters (a lone Relu or Flatten) or no Conv/Gemm work: a
  ratio whose denominator is 0 is undefined, reported as None (and OM with it), and
  ``theoretical["undefined"]`` says why.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from converters import ir

FLOP_CONVENTION = "MACs of Conv and Gemm layers (1 multiply-accumulate = 1 FLOP)"


def _node_cost(n: ir.Node, in_shapes: list[ir.Shape]) -> dict[str, int]:
    c = {"flops": 0, "bops": 0, "params_fp": 0, "params_bin": 0, "elementwise_ops": 0}
    out_elems = math.prod(n.out_shape[1:]) if n.out_shape else 0  # per image
    if isinstance(n, ir.Conv):
        kh, kw = n.kernel
        c["flops"] = out_elems * n.in_c * kh * kw
        c["params_fp"] = n.weight.size + (0 if n.bias is None else n.bias.size)
    elif isinstance(n, ir.BinConv):
        kh, kw = n.kernel
        c["bops"] = out_elems * n.in_c * kh * kw
        c["params_bin"] = n.weight_sign.size
        c["params_fp"] = n.scale.size + n.bias.size + (0 if n.threshold is None else n.in_c)
        c["elementwise_ops"] = out_elems  # scale·dot + bias
    elif isinstance(n, ir.Gemm):
        c["flops"] = out_elems * n.weight.shape[1]
        c["params_fp"] = n.weight.size + (0 if n.bias is None else n.bias.size)
    elif isinstance(n, ir.Affine):
        c["params_fp"] = n.scale.size + n.bias.size
        c["elementwise_ops"] = out_elems
    elif isinstance(n, ir.MaxPool | ir.AvgPool):
        c["elementwise_ops"] = out_elems * n.kernel[0] * n.kernel[1]
    elif isinstance(n, ir.GlobalAvgPool):
        c["elementwise_ops"] = math.prod(in_shapes[0][1:])
    elif isinstance(n, ir.Clip | ir.Add):
        c["elementwise_ops"] = out_elems
    return c


def _om(a: float, b: float) -> float:
    return math.sqrt((a * a + b * b) / 2.0)


def _ratio(num: float, den: float) -> float | None:
    """``num / den``; None where it is undefined (nothing to compare)."""
    return num / den if den > 0 else None


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def infer_algorithm(graph: ir.Graph) -> str:
    bins = graph.binary_convs()
    if not bins:
        return "fp32"
    return "react" if any(b.threshold is not None for b in bins) else "bnn"


def analyze_graph(graph: ir.Graph) -> dict[str, Any]:
    nodes = []
    tot = {"flops": 0, "bops": 0, "params_fp": 0, "params_bin": 0, "elementwise_ops": 0}
    for n in graph.nodes:
        cost = _node_cost(n, [graph.shapes[i] for i in n.inputs])
        for k, v in cost.items():
            tot[k] += int(v)
        entry: dict[str, Any] = {
            "name": n.name,
            "op": n.kind,
            "binarized": isinstance(n, ir.BinConv),
            "why": n.note,
            "onnx_nodes": list(n.sources),
            "output_shape": list(n.out_shape),
        }
        if isinstance(n, ir.Conv | ir.BinConv):
            entry.update(
                in_c=n.in_c,
                out_c=n.out_c,
                kernel=list(n.kernel),
                strides=list(n.strides),
                pads=list(n.pads),
            )
        entry.update({k: int(v) for k, v in cost.items() if v})
        nodes.append(entry)

    params_total = tot["params_fp"] + tot["params_bin"]
    flops_total = tot["flops"] + tot["bops"]
    compression = _ratio(params_total, tot["params_bin"] / 32 + tot["params_fp"])
    speedup = _ratio(flops_total, tot["bops"] / 64 + tot["flops"])
    undefined = [
        why
        for ratio, why in (
            (compression, "no parameters: compression is undefined"),
            (speedup, "no Conv or Gemm work (FLOPs or BOPs): speedup is undefined"),
        )
        if ratio is None
    ]
    om = None if speedup is None or compression is None else _om(speedup, compression)
    convs = graph.convs()
    bins = graph.binary_convs()
    algorithm = graph.metadata.get("bnnbench.algorithm") or infer_algorithm(graph)
    result: dict[str, Any] = {
        "arch": graph.metadata.get("bnnbench.arch"),
        "algorithm": algorithm,
        "algorithm_source": "metadata" if "bnnbench.algorithm" in graph.metadata else "inferred",
        "input_shape": list(graph.input_shape),
        "output_shape": list(graph.shapes[graph.output]),
        "n_convs": len(convs),
        "n_binary_convs": len(bins),
        "binarized_nodes": [b.name for b in bins],
        "totals": {
            "params_total": params_total,
            "params_fp": tot["params_fp"],
            "params_bin": tot["params_bin"],
            "flops_total": flops_total,
            "flops_fp": tot["flops"],
            "bops": tot["bops"],
            "elementwise_ops": tot["elementwise_ops"],
        },
        "flop_convention": FLOP_CONVENTION,
        "theoretical": {
            "speedup": _round(speedup),
            "compression": _round(compression),
            "om": _round(om),
            "formula": "compression = params_total/(params_bin/32 + params_fp); "
            "speedup = flops_total/(bops/64 + flops_fp); OM = sqrt((speedup²+compression²)/2)",
            **({"undefined": "; ".join(undefined)} if undefined else {}),
        },
        "notes": list(graph.notes),
        "nodes": nodes,
    }
    if result["arch"] is None:
        result["arch_source"] = "unknown (no bnnbench.arch metadata)"
    return result


def analyze_file(onnx_path: str | Path) -> dict[str, Any]:
    from converters.frontend import load_ir

    return analyze_graph(load_ir(onnx_path))

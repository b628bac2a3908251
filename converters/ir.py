"""The converters' internal graph: what the ONNX front end recognises, before any back end.

The ops are the native format's (``native/format.py``: one ``*Params`` dataclass per op with
its fields, opcode and ``kind``); an IR node is such an op wired by value *names*, with the
ONNX nodes it was made from and a note saying why it was (or was not) binarized or what was
folded into it. Every node knows its output shape; shapes are NCHW (rank 4) or N×F (rank 2).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from native import format as nf

Pads = nf.Pads  # top, left, bottom, right
Shape = tuple[int, ...]


@dataclass
class Node:
    name: str
    inputs: list[str]
    output: str
    out_shape: Shape = ()
    sources: list[str] = field(default_factory=list)  # ONNX node names merged into this node
    note: str = ""
    # the ONNX value that holds this node's result; differs from ``output`` once a BatchNorm or
    # per-channel affine has been folded in (used for layer-wise verification)
    onnx_output: str = ""

    kind = "node"

    def __post_init__(self) -> None:
        if not self.onnx_output:
            self.onnx_output = self.output

    def add_note(self, text: str) -> None:
        self.note = f"{self.note}; {text}" if self.note else text


# One line per op: the op's fields come from native/format.py, the wiring from Node.


@dataclass
class Conv(nf.Conv2dF32Params, Node):
    """FP32 convolution, OIHW weights; any BatchNorm already folded in."""


@dataclass
class BinConv(nf.Conv2dBinParams, Node):
    """Binary convolution: ``scale[o]·Σ sign(x − threshold)·w + bias[o]`` with w = ±1."""


@dataclass
class Affine(nf.AffineParams, Node):
    pass


@dataclass
class Clip(nf.ClipParams, Node):
    pass


@dataclass
class MaxPool(nf.MaxPoolParams, Node):
    pass


@dataclass
class AvgPool(nf.AvgPoolParams, Node):
    pass


@dataclass
class GlobalAvgPool(nf.GlobalAvgPoolParams, Node):
    pass


@dataclass
class Add(nf.AddParams, Node):
    pass


@dataclass
class Flatten(nf.FlattenParams, Node):
    pass


@dataclass
class Gemm(nf.GemmParams, Node):
    """``y = x·Wᵀ + b`` with W shaped (out, in)."""


@dataclass
class Graph:
    input: str
    input_shape: Shape
    output: str
    nodes: list[Node]
    shapes: dict[str, Shape]
    metadata: dict[str, str] = field(default_factory=dict)  # ONNX metadata_props
    notes: list[str] = field(default_factory=list)  # graph-level notes (e.g. batch dim fixed)

    def binary_convs(self) -> list[BinConv]:
        return [n for n in self.nodes if isinstance(n, BinConv)]

    def convs(self) -> list[Conv | BinConv]:
        return [n for n in self.nodes if isinstance(n, Conv | BinConv)]


def conv_out_hw(
    h: int, w: int, kernel: tuple[int, int], strides: tuple[int, int], pads: Pads
) -> tuple[int, int]:
    """Output size with floor rounding (FORMAT.md)."""
    t, left, b, r = pads
    return (h + t + b - kernel[0]) // strides[0] + 1, (w + left + r - kernel[1]) // strides[1] + 1

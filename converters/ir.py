"""The converters' internal graph: what the ONNX front end recognises, before any back end.

Nodes mirror the native format's ops (FORMAT.md) but keep names of values instead of ids, the
ONNX nodes each was made from, and a note saying why it was (or was not) binarized or what was
folded into it. Every node knows its output shape; shapes are NCHW (rank 4) or N×F (rank 2).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

Pads = tuple[int, int, int, int]  # top, left, bottom, right
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


@dataclass
class Conv(Node):
    """FP32 convolution, OIHW weights; any BatchNorm already folded in."""

    weight: np.ndarray = field(default_factory=lambda: np.zeros((1, 1, 1, 1), np.float32))
    bias: np.ndarray | None = None
    strides: tuple[int, int] = (1, 1)
    pads: Pads = (0, 0, 0, 0)
    kind = "conv"

    @property
    def out_c(self) -> int:
        return int(self.weight.shape[0])

    @property
    def in_c(self) -> int:
        return int(self.weight.shape[1])

    @property
    def kernel(self) -> tuple[int, int]:
        return int(self.weight.shape[2]), int(self.weight.shape[3])


@dataclass
class BinConv(Node):
    """Binary convolution: ``scale[o]·Σ sign(x − threshold)·w + bias[o]`` with w = ±1."""

    weight_sign: np.ndarray = field(default_factory=lambda: np.ones((1, 1, 1, 1), np.int8))
    scale: np.ndarray = field(default_factory=lambda: np.ones(1, np.float32))
    bias: np.ndarray = field(default_factory=lambda: np.zeros(1, np.float32))
    threshold: np.ndarray | None = None
    strides: tuple[int, int] = (1, 1)
    pads: Pads = (0, 0, 0, 0)
    kind = "binconv"

    @property
    def out_c(self) -> int:
        return int(self.weight_sign.shape[0])

    @property
    def in_c(self) -> int:
        return int(self.weight_sign.shape[1])

    @property
    def kernel(self) -> tuple[int, int]:
        return int(self.weight_sign.shape[2]), int(self.weight_sign.shape[3])


@dataclass
class Affine(Node):
    scale: np.ndarray = field(default_factory=lambda: np.ones(1, np.float32))
    bias: np.ndarray = field(default_factory=lambda: np.zeros(1, np.float32))
    kind = "affine"


@dataclass
class Clip(Node):
    min: float = -1.0
    max: float = 1.0
    kind = "clip"


@dataclass
class MaxPool(Node):
    kernel: tuple[int, int] = (2, 2)
    strides: tuple[int, int] = (2, 2)
    pads: Pads = (0, 0, 0, 0)
    kind = "maxpool"


@dataclass
class AvgPool(Node):
    kernel: tuple[int, int] = (2, 2)
    strides: tuple[int, int] = (2, 2)
    pads: Pads = (0, 0, 0, 0)
    count_include_pad: bool = False
    kind = "avgpool"


@dataclass
class GlobalAvgPool(Node):
    kind = "global_avgpool"


@dataclass
class Add(Node):
    kind = "add"


@dataclass
class Flatten(Node):
    kind = "flatten"


@dataclass
class Gemm(Node):
    """``y = x·Wᵀ + b`` with W shaped (out, in)."""

    weight: np.ndarray = field(default_factory=lambda: np.zeros((1, 1), np.float32))
    bias: np.ndarray | None = None
    kind = "gemm"


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


def conv_out_hw(h: int, w: int, kernel: tuple[int, int], strides: tuple[int, int],
                pads: Pads) -> tuple[int, int]:
    """Output size with floor rounding (FORMAT.md)."""
    t, left, b, r = pads
    return (h + t + b - kernel[0]) // strides[0] + 1, (w + left + r - kernel[1]) // strides[1] + 1

"""In-memory form of a ``.dab`` model (what the writer serialises and the reader returns)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from converters.backends.dabnn import schema


class DabFormatError(ValueError):
    """The bytes are not a daBNN model this package can read, or the model breaks a rule of
    daBNN's runtime (see :func:`converters.backends.dabnn.check.check_model`)."""


@dataclass
class Tensor:
    """An initializer: conv weights (4-D, NHWC-ordered ``out, kh, kw, in``), biases and affine
    coefficients (1-D). Bit tensors keep their ``shape`` in elements (channels, not words)."""

    name: str
    data_type: int
    shape: tuple[int, ...]
    float32_data: np.ndarray | None = None
    bin_data: np.ndarray | None = None  # uint64 words
    align_hwc_to_128: bool = False

    @property
    def is_bit(self) -> bool:
        return self.data_type == schema.BIT


@dataclass
class Input:
    name: str
    shape: tuple[int, ...]  # N, H, W, C with N = 1


@dataclass
class Layer:
    """One layer: its type name (``schema.LAYER_TYPES``) and the fields of its param table,
    keyed by the schema's field names (absent optional fields are left out)."""

    type: str
    params: dict[str, Any]
    name: str = ""

    @property
    def output(self) -> str:
        return str(self.params.get("output", ""))

    def inputs(self) -> list[str]:
        """Names of the activations it reads (not its weights)."""
        p = self.params
        if self.type == "Add":
            return [p["input1"], p["input2"]]
        if self.type == "Concat":
            return list(p["inputs"])
        return [p["input"]]

    def weights(self) -> list[str]:
        keys = {
            "FpConv2D": ("weight", "bias"),
            "BinConv2D": ("weight", "bias"),
            "FC": ("weight", "bias"),
            "Affine": ("a", "b"),
            "PRelu": ("slope",),
        }
        return [self.params[k] for k in keys.get(self.type, ()) if self.params.get(k)]


@dataclass
class DabModel:
    layers: list[Layer]
    initializers: list[Tensor]
    inputs: list[Input]
    version: int = schema.MODEL_VERSION
    _by_name: dict[str, Tensor] = field(default_factory=dict, repr=False, compare=False)

    def tensor(self, name: str) -> Tensor:
        if len(self._by_name) != len(self.initializers):
            self._by_name = {t.name: t for t in self.initializers}
        try:
            return self._by_name[name]
        except KeyError:
            raise DabFormatError(f"no initializer named {name!r}") from None

    @property
    def output(self) -> str:
        """daBNN has no declared outputs: the network's result is the last layer's output."""
        return self.layers[-1].output if self.layers else ""

    def count(self, layer_type: str) -> int:
        return sum(layer.type == layer_type for layer in self.layers)

"""Back ends: one package per target library, all of one shape, behind one registry.

Every package in :data:`BACKENDS` has

* ``convert.py`` with ``convert(graph, out_path, meta) -> dict`` — write the artifact for an IR
  graph to ``out_path`` and return its summary (size, hashes, converter, ``padding_mode`` and
  what is particular to the library);
* ``verify.py`` with ``verify(onnx_path, artifact_path, graph, *, summary, n_inputs) -> dict``
  — the fidelity report of the harness (converters/fidelity.py), one schema for all; the
  back end supplies a :class:`converters.fidelity.Artifact` (how to run its file, its numpy
  reference, its layer check) and a :class:`converters.fidelity.Policy`.

Packages are imported on first use: TensorFlow (LCE), flatbuffers (daBNN) and the native
engine are only loaded for the library asked for, and this module stays light enough for an
agent that only reads flatbuffers (``backends.tflite.flatbuffer``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from converters.errors import UnsupportedModelError

if TYPE_CHECKING:
    from converters import ir


@dataclass(frozen=True)
class Backend:
    name: str  # the library, as ``--library`` and the coordinator name it
    package: str  # holds convert.py and verify.py
    artifact: str  # what it writes

    def convert(self, graph: ir.Graph, out_path: Path, meta: dict[str, Any]) -> dict[str, Any]:
        return importlib.import_module(f"{self.package}.convert").convert(graph, out_path, meta)

    def verify(
        self,
        onnx_path: Path,
        artifact_path: Path,
        graph: ir.Graph,
        *,
        summary: dict[str, Any],
        n_inputs: int,
    ) -> dict[str, Any]:
        return importlib.import_module(f"{self.package}.verify").verify(
            onnx_path, artifact_path, graph, summary=summary, n_inputs=n_inputs
        )


BACKENDS: dict[str, Backend] = {
    b.name: b
    for b in (
        Backend("native", "converters.backends.native", "native engine model (.bnn)"),
        Backend("lce", "converters.backends.lce", "Larq Compute Engine flatbuffer (.tflite)"),
        Backend(
            "tflite", "converters.backends.tflite", "plain TFLite flatbuffer, FP32 only (.tflite)"
        ),
        Backend("dabnn", "converters.backends.dabnn", "daBNN model (.dab)"),
    )
}


def get_backend(library: str) -> Backend:
    try:
        return BACKENDS[library]
    except KeyError:
        raise UnsupportedModelError(
            f"unknown library {library!r}; choose from {', '.join(BACKENDS)}"
        ) from None

"""Fidelity of a ``.dab`` model through the harness (converters/fidelity.py), without daBNN: the
numpy reference of daBNN's runtime (reference.py) against the IR and onnxruntime.

* **converter check (layer-wise, teacher-forced)** — the ``.dab`` model runs in the reference,
  keeping every layer's output. Each IR node whose value the ``.dab`` model holds is then
  evaluated under daBNN's semantics (``DABNN``: bit = x > 0, binary-conv padding −1) on the
  ``.dab`` model's own values of its inputs, and compared. Identical inputs mean identical
  sign decisions, so differences are float rounding only. This alone is the verdict: the file
  computes what the converter claims.
* **end to end** — against the IR under daBNN's semantics (``vs_reference``) and against
  onnxruntime (``vs_onnx``, plus the older ``vs_onnxruntime`` summary): reported, not a
  verdict, because daBNN's −1 padding of binary convs is not the ONNX model's zero padding
  (``padding`` in the conversion summary).

Real daBNN fidelity (its ARM kernels) can only be confirmed on a board: see docs/dabnn.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from converters import ir
from converters.backends.dabnn import reference
from converters.backends.dabnn.lower import lower
from converters.backends.dabnn.reader import read_dab
from converters.fidelity import Artifact, EndToEnd, Policy, check, make_inputs, teacher_forced
from converters.reference import DABNN, run_ir

# Tolerances are the harness's (LAYER_RTOL of the layer output's max |value|). A binary conv's
# Affine holds b = bias + K·scale and daBNN computes a·pop + b: float32 rounding of those
# K-sized terms (K up to 4608 in ResNet) costs ~K·2^-24 relative precision, which is what
# daBNN computes too.
POLICY = Policy(gate=None)


class DabArtifact(Artifact):
    backend = "numpy reference of daBNN's runtime (no daBNN here)"
    reference_semantics = "daBNN (bit = x > 0, binary-conv padding -1)"
    policy = POLICY

    def __init__(self, dab_path: str | Path, graph: ir.Graph) -> None:
        self.model = read_dab(dab_path)
        self.graph = graph
        self.exact = lower(graph).exact  # IR value -> .dab tensor holding exactly its value
        self.snaps: dict[str, np.ndarray] = {}

    def run(self, x: np.ndarray) -> np.ndarray:
        y, self.snaps = reference.execute(self.model, np.transpose(x, (0, 2, 3, 1)), snapshots=True)
        return reference.nhwc_to_ir(y, self.graph.shapes[self.graph.output])

    def reference(self, x: np.ndarray) -> np.ndarray:
        return run_ir(self.graph, x, DABNN)[self.graph.output]

    def layer_errors(
        self, x: np.ndarray, y: np.ndarray, onnx: dict[str, np.ndarray]
    ) -> dict[str, float]:
        exposed = {
            n.output: reference.nhwc_to_ir(self.snaps[t][None], self.graph.shapes[n.output])
            for n in self.graph.nodes
            if (t := self.exact.get(n.output)) is not None and t in self.snaps
        }
        return teacher_forced(self.graph, x, exposed, DABNN)

    def layer_coverage(self, worst: dict[str, float]) -> tuple[bool, dict[str, Any], list[str]]:
        return (
            bool(worst),
            {"semantics": self.reference_semantics},
            [] if worst else ["no layer of the .dab model could be checked"],
        )

    def conclude(
        self, passed: bool, vs_onnx: EndToEnd | None, vs_reference: EndToEnd | None
    ) -> tuple[dict[str, Any], list[str]]:
        extra: dict[str, Any] = {}
        if vs_onnx is not None:
            s = vs_onnx.summary()
            extra["vs_onnxruntime"] = {
                "max_rel_err": s["max_rel_err"],
                "top1_agreement": s["top1_agreement"],
                "note": "expected to differ where binary convs are padded: daBNN pads them "
                "with -1, the ONNX model with 0",
            }
        return extra, [
            "the .dab model equals the ONNX model under daBNN's semantics layer by layer"
        ]


def verify_dabnn(
    onnx_path: str | Path | None,
    dab_path: str | Path,
    graph: ir.Graph,
    n_inputs: int = 2,
    seed: int = 0,
) -> dict[str, Any]:
    """The harness's report; ``passed`` is the converter check (see module doc). Without
    ``onnx_path`` there is no onnxruntime comparison."""
    inputs = make_inputs(tuple(graph.input_shape), n_inputs, seed)
    return check(DabArtifact(dab_path, graph), graph, onnx_path, inputs=inputs, seed=seed)


def verify(
    onnx_path: Path, artifact_path: Path, graph: ir.Graph, *, summary: dict[str, Any], n_inputs: int
) -> dict[str, Any]:
    """The back-end entry point (converters/backends/__init__.py)."""
    return verify_dabnn(onnx_path, artifact_path, graph, n_inputs=n_inputs)

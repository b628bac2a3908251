"""Fidelity of a native ``.bnn`` through the harness (converters/fidelity.py): the C engine (or
the numpy reference interpreter where the engine cannot be built) against onnxruntime.

Layer-wise, onnxruntime is asked for every intermediate value and each native layer runs alone
(as a one-layer model) on onnxruntime's value of its input; residual ``ADD``s, having two
inputs, are skipped and listed. The verdict is gated on onnxruntime end to end: models with
binary convs may miss it on up to half of the inputs when every layer passes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from converters import ir
from converters.fidelity import Artifact, ArtifactError, Policy, check, make_inputs, rel_err
from native import format as nf

POLICY = Policy(gate="onnx", binary_misses=0.5)


def _executor(backend: str, threads: int) -> tuple[str, str]:
    """The executor to use (``native`` or ``reference``) and a note when ``auto`` fell back."""
    if backend == "auto":
        try:
            from native.engine import library_path

            library_path()  # builds libbnn.so once if a compiler is there
            return "native", ""
        except Exception as exc:  # engine not built here (e.g. a coordinator-only host)
            return "reference", f"native engine unavailable ({exc}); used the numpy reference"
    if backend not in ("native", "reference"):
        raise ValueError(f"unknown backend {backend!r}")
    return backend, ""


def _single_layer(layer: nf.Layer, in_shape: tuple[int, ...]) -> bytes:
    one = nf.layer_for(layer, [0], 1, layer.name)  # type: ignore[arg-type]
    return nf.dumps(nf.NativeModel(tuple(in_shape), [one], n_values=2, input_id=0, output_id=1))


class NativeArtifact(Artifact):
    policy = POLICY

    def __init__(self, data: bytes, graph: ir.Graph, backend: str, threads: int) -> None:
        self.data = data
        self.graph = graph
        self.threads = threads
        self.backend, self.note = _executor(backend, threads)
        model = nf.loads(data)
        self.has_binary_layers = any(isinstance(la, nf.Conv2dBin) for la in model.layers)
        # the file's layers are the graph's nodes, possibly reordered (convert.execution_order)
        self.layers = {layer.name: layer for layer in model.layers}
        aligned = len(graph.nodes) == len(model.layers) == len(self.layers) and all(
            n.name in self.layers for n in graph.nodes
        )
        if not aligned:
            self.layers_unavailable = (
                "native file's layers do not match this ONNX model's "
                "conversion; layer-wise check skipped"
            )
        # which ONNX value holds each IR value (a folded BatchNorm's output, not the conv's)
        self.onnx_name = {graph.input: graph.input}
        self.onnx_name.update({n.output: n.onnx_output for n in graph.nodes})
        self.skipped: set[str] = set()

    def _exec(self, model: bytes, x: np.ndarray) -> np.ndarray:
        if self.backend == "native":
            from native.engine import NativeEngine, NativeError

            try:
                with NativeEngine(model, threads=self.threads) as eng:
                    return np.array(eng.run(x))
            except NativeError as exc:
                raise ArtifactError(str(exc)) from exc
        from converters import reference

        try:
            return reference.run(model, x)
        except nf.FormatError as exc:
            raise ArtifactError(str(exc)) from exc

    def onnx_values(self) -> list[str]:
        g = self.graph
        return sorted({self.onnx_name[v] for n in g.nodes for v in [*n.inputs, n.output]})

    def run(self, x: np.ndarray) -> np.ndarray:
        return self._exec(self.data, x)

    def layer_errors(
        self, x: np.ndarray, y: np.ndarray, onnx: dict[str, np.ndarray]
    ) -> dict[str, float]:
        errs = {}
        for n in self.graph.nodes:
            if len(n.inputs) != 1:
                self.skipped.add(n.name)  # ADD: two inputs, not expressible as a one-layer model
                continue
            one = _single_layer(self.layers[n.name], self.graph.shapes[n.inputs[0]])
            ly = self._exec(one, onnx[self.onnx_name[n.inputs[0]]])
            errs[n.name] = rel_err(ly, onnx[self.onnx_name[n.output]])
        return errs

    def layer_coverage(self, worst: dict[str, float]) -> tuple[bool, dict[str, Any], list[str]]:
        return True, {"skipped": sorted(self.skipped)}, []


def verify_native(
    onnx_path: str | Path,
    bnn_path: str | Path,
    n_inputs: int = 2,
    seed: int = 0,
    threads: int = 1,
    backend: str = "auto",
    layerwise: bool = True,
    graph: ir.Graph | None = None,
    inputs: list[np.ndarray] | None = None,
) -> dict[str, Any]:
    """Compare the native model with onnxruntime; returns the harness's report.

    ``backend``: ``native`` (the C engine), ``reference`` (numpy) or ``auto``. ``inputs``
    replaces the random inputs (``n_inputs``/``seed`` are then ignored; seed is reported -1)."""
    from converters.frontend import load_ir

    data = Path(bnn_path).read_bytes()
    if graph is None:
        graph = load_ir(onnx_path)
    artifact = NativeArtifact(data, graph, backend, threads)
    if inputs is None:
        inputs = make_inputs(tuple(nf.loads(data).input_shape), n_inputs, seed)
    else:
        seed = -1
    return check(artifact, graph, onnx_path, inputs=inputs, seed=seed, layerwise=layerwise)


def verify(
    onnx_path: Path, artifact_path: Path, graph: ir.Graph, *, summary: dict[str, Any], n_inputs: int
) -> dict[str, Any]:
    """The back-end entry point (converters/backends/__init__.py)."""
    return verify_native(onnx_path, artifact_path, n_inputs=n_inputs, graph=graph)

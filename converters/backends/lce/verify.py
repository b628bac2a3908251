"""Fidelity of an LCE (or plain TFLite) ``.tflite`` through the harness (converters/fidelity.py):
against onnxruntime and against the IR.

The artifact runs in LCE's interpreter (the reference build of its kernels on x86); the same
random inputs (standard normal, no exact zeros) go through three things:

* **onnxruntime on the source ONNX model** — the deviation of the artifact from the model the
  user uploaded (``vs_onnx``). With ``padding="exact"`` this is float rounding only; with
  ``padding="one"`` binary convs pad with +1 and it is a real, documented difference.
* **the IR in numpy** (converters/reference.py) **with the padding semantics the conversion
  mapped to** — zero padding, or +1 padding for ``padding="one"`` (``vs_reference``). A
  converter bug (weights transposed wrongly, a shifted window, a lost BatchNorm) shows up here
  whatever the padding mode.
* **layer-wise**: the artifact is run once more with its intermediate tensors added as
  outputs (found by the layer names the converter gave them); every IR node whose output is
  such a tensor is recomputed by the reference *from the artifact's own input values* and
  compared. A binary conv then sees bit-identical inputs, so only float rounding remains,
  and one sign flip at a threshold (which random binary networks amplify end to end, see
  converters/fidelity.py) cannot hide or fake a converter error.

  The model output is checked the same way, and a node without a tensor of its own (fused
  into the next op) is recomputed inside the next node's check, so every node is covered.

Verdict: models with binary convs pass when every node is within ``LAYER_RTOL`` (relative to
the node output's max |value|); their end-to-end misses are then sign flips at a threshold,
reported with their count (ReAct ResNet-18 shows them on about half the inputs, so an
end-to-end rule would fail correct conversions at random). FP32 models must also be within
``E2E_RTOL`` end to end on every input. ``matches_onnx``: in exact mode the reference has the
ONNX model's semantics, so passing means matching it; with +1 padding it is false and
``vs_onnx`` says by how much the artifact differs.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from converters import ir, reference
from converters.backends.lce.keras import flatten_order, import_tf, tensor_owner
from converters.backends.lce.padding import PADDING_MODES, plan_graph_padding
from converters.backends.tflite.flatbuffer import LCE_BCONV2D, TFLiteSummary, inspect_tflite
from converters.fidelity import (
    Artifact,
    ArtifactError,
    EndToEnd,
    Policy,
    check,
    make_inputs,
    teacher_forced,
)

# the reference, not onnxruntime, gates: with +1 padding the artifact differs from the ONNX
# model by design; binary models pass on their layers alone (ReAct ResNet-18 flips signs on
# about half the inputs)
POLICY = Policy(gate="reference", binary_misses=1.0)


def infer_padding_mode(fb: TFLiteSummary) -> str:
    """``one`` when binary convs pad with +1: an ``LceBconv2d`` with ``pad_values=1``, or an
    explicit pad feeding the binarization (``LceQuantize``); else ``exact``."""
    producer = {t: o for o in fb.operators for t in o.outputs}
    for o in fb.operators:
        if o.op == LCE_BCONV2D and (o.custom_options or {}).get("pad_values") == 1:
            return "one"
        if o.op == "LceQuantize":
            src = producer.get(o.inputs[0]) if o.inputs else None
            while src is not None and src.op == "SUB":  # ReAct threshold: x − t first
                src = producer.get(src.inputs[0])
            if src is not None and src.op in ("PAD", "PADV2"):
                return "one"
    return "exact"


def reference_graph(graph: ir.Graph, mode: str) -> tuple[ir.Graph, reference.BinarySemantics]:
    """The IR with the semantics the conversion mapped to: as it is (zero padding), or for
    ``one`` every binary conv padded with +1 on the taps it reads (pads trimmed to those: the
    ones it does not read change nothing)."""
    if mode != "one":
        return graph, reference.FORMAT
    read = {
        id(n): p.read_pads
        for n, p in zip(graph.binary_convs(), plan_graph_padding(graph, mode), strict=True)
    }
    nodes = [dataclasses.replace(n, pads=read[id(n)]) if id(n) in read else n for n in graph.nodes]
    return dataclasses.replace(graph, nodes=nodes), reference.PAD_ONE


# ----------------------------------------------------------------------------- probes


def _probe_tensors(graph: ir.Graph, fb: TFLiteSummary) -> dict[str, int]:
    """IR value name → tensor index in the flatbuffer holding it (NHWC), from layer names;
    only tensors whose shape matches the IR's."""
    shapes = dict(enumerate(fb.tensor_shapes))
    found: dict[str, int] = {}
    for o in fb.operators:
        for t, nm in zip(o.outputs, o.output_names, strict=True):
            i = tensor_owner(nm)
            if i is None or i >= len(graph.nodes):
                continue
            n = graph.nodes[i]
            want = list(_nhwc(tuple(n.out_shape)))
            if shapes.get(t) == want and not _partial_value(o.op, n):
                found[n.output] = t  # a later op of the same node wins: its output is final
    return found


def _partial_value(op: str, n: ir.Node) -> bool:
    """Whether an op of kind ``op`` provably computes only part of node ``n``: the Mul of an
    affine with a bias (artifacts converted before the Mul got a helper layer of its own
    named it after the node, and the Add, fused with the next Clip, after that Clip), or the
    Minimum of a clip with a finite lower bound (TF's clip_by_value: Minimum, then Maximum)."""
    if op == "MUL" and isinstance(n, ir.Affine):
        return n.bias is not None and bool(np.any(np.asarray(n.bias) != 0))
    if op == "MINIMUM" and isinstance(n, ir.Clip):
        return bool(np.isfinite(float(n.min)))
    return False


def _nhwc(shape: tuple[int, ...]) -> tuple[int, ...]:
    return (shape[0], shape[2], shape[3], shape[1]) if len(shape) == 4 else shape


def _to_nchw(y: np.ndarray) -> np.ndarray:
    return np.transpose(y, (0, 3, 1, 2)) if y.ndim == 4 else y


def _probe_to_ir(graph: ir.Graph, value: str, y: np.ndarray) -> np.ndarray:
    """A probed tensor in the IR's layout: NCHW, and flattened in C, H, W order."""
    y = _to_nchw(y)
    n = next((m for m in graph.nodes if m.output == value), None)
    if isinstance(n, ir.Flatten) and flatten_order(graph, n) == "hwc":
        _, c, h, w = graph.shapes[n.inputs[0]]
        y = y.reshape(y.shape[0], h, w, c).transpose(0, 3, 1, 2).reshape(y.shape[0], -1)
    return y


def with_extra_outputs(flatbuffer: bytes, tensors: list[int]) -> bytes:
    """The same model with ``tensors`` appended to the main subgraph's outputs (the ops,
    weights and options are untouched; uses the TFLite schema module shipped with LCE)."""
    import flatbuffers
    from larq_compute_engine.mlir.python import tflite_schema as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(flatbuffer, 0))
    sg = model.subgraphs[0]
    sg.outputs = [int(t) for t in sg.outputs] + [int(t) for t in tensors]
    builder = flatbuffers.Builder(len(flatbuffer) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


# ----------------------------------------------------------------------------- the artifact


def _interpreter(data: bytes, threads: int) -> Any:
    import_tf()  # larq_compute_engine's package import pulls in TensorFlow
    from larq_compute_engine.tflite.python.interpreter import Interpreter

    return Interpreter(data, num_threads=threads)


def _predict(interp: Any, x_nchw: np.ndarray) -> list[np.ndarray]:
    x = np.ascontiguousarray(np.transpose(x_nchw, (0, 2, 3, 1)) if x_nchw.ndim == 4 else x_nchw)
    out = interp.predict(x)
    return [np.asarray(o, np.float32) for o in (out if isinstance(out, list) else [out])]


class LceArtifact(Artifact):
    backend = "lce-interpreter"
    policy = POLICY

    def __init__(
        self, data: bytes, graph: ir.Graph, mode: str, threads: int, layerwise: bool
    ) -> None:
        self.data, self.graph, self.mode, self.threads = data, graph, mode, threads
        self.fb = inspect_tflite(data)
        self.ref_graph, self.semantics = reference_graph(graph, mode)
        self.reference_semantics = (
            "zero padding" if mode == "exact" else "binary convs padded with +1 (as converted)"
        )
        probes = _probe_tensors(graph, self.fb) if layerwise else {}
        probes.pop(graph.output, None)  # the model output is the interpreter's output anyway
        self.probes = sorted(probes, key=lambda v: probes[v])
        self.probe_tensors = [probes[v] for v in self.probes]
        self.probe_same = True

    def open(self) -> None:
        try:
            self.interp = _interpreter(self.data, self.threads)
            self.probe_interp = (
                _interpreter(with_extra_outputs(self.data, self.probe_tensors), self.threads)
                if self.probes
                else None
            )
        except Exception as exc:  # the interpreter rejects the file
            raise ArtifactError(f"LCE interpreter cannot load the model: {exc}") from exc

    def run(self, x: np.ndarray) -> np.ndarray:
        return _to_nchw(_predict(self.interp, x)[0])

    def reference(self, x: np.ndarray) -> np.ndarray:
        return reference.run_ir(self.ref_graph, x, self.semantics)[self.graph.output]

    def layer_errors(
        self, x: np.ndarray, y: np.ndarray, onnx: dict[str, np.ndarray]
    ) -> dict[str, float]:
        got: dict[str, np.ndarray] = {}
        if self.probe_interp is not None:
            outs = _predict(self.probe_interp, x)
            self.probe_same &= bool(np.array_equal(_to_nchw(outs[0]), y))
            got = {
                v: _probe_to_ir(self.graph, v, o)
                for v, o in zip(self.probes, outs[1:], strict=True)
            }
        # the model output too: its node is then checked from the artifact's inputs to it
        got[self.graph.output] = y.reshape(self.graph.shapes[self.graph.output])
        return teacher_forced(self.ref_graph, x, got, self.semantics)

    def layer_coverage(self, worst: dict[str, float]) -> tuple[bool, dict[str, Any], list[str]]:
        # the output node is always checked when probes ran, and every node without a tensor
        # of its own is recomputed inside the check of a later one: all nodes are covered
        out_node = next((n.name for n in self.graph.nodes if n.output == self.graph.output), "")
        unchecked = [n.name for n in self.graph.nodes if n.name not in worst]
        problems = (
            [] if self.probe_same else ["the model with probe outputs computes a different output"]
        )
        return (
            out_node in worst and self.probe_same,
            {"no_own_tensor": unchecked, "probe_model_output_identical": self.probe_same},
            problems,
        )

    def details(self) -> dict[str, Any]:
        return {
            "padding_mode": self.mode,
            "exact_padding": self.mode == "exact",
            "n_lce_bconv2d": self.fb.count(LCE_BCONV2D),
        }

    def conclude(
        self, passed: bool, vs_onnx: EndToEnd | None, vs_reference: EndToEnd | None
    ) -> tuple[dict[str, Any], list[str]]:
        # in exact mode the reference has the ONNX model's semantics
        if self.graph.binary_convs():
            matches_onnx = passed and self.mode == "exact"
        else:
            matches_onnx = vs_onnx is not None and all(vs_onnx.ok())
        notes = []
        if passed and not matches_onnx and self.mode == "one" and vs_onnx is not None:
            o = vs_onnx.summary()
            notes.append(
                f"differs from the ONNX model as expected for +1 padding of binary "
                f"convs (max rel err {o['max_rel_err']:.3g}, top-1 agreement "
                f"{o['top1_agreement']:.0%}; see docs/lce.md)"
            )
        return {"matches_onnx": bool(matches_onnx)}, notes


def verify_lce(
    onnx_path: str | Path,
    tflite_path: str | Path,
    n_inputs: int = 2,
    seed: int = 0,
    *,
    padding: str | None = None,
    threads: int = 1,
    layerwise: bool = True,
    graph: ir.Graph | None = None,
) -> dict[str, Any]:
    """Run the ``.tflite`` in LCE's interpreter and compare (see the module docstring);
    returns the harness's report. ``padding`` (``exact`` or ``zero``, ``one``) defaults to
    what the flatbuffer shows."""
    from converters.frontend import load_ir

    data = Path(tflite_path).read_bytes()
    if graph is None:
        graph = load_ir(onnx_path)
    # "zero" is how summaries name exact padding (padding_mode), "exact" how convert_lce does
    mode = {"zero": "exact"}.get(padding or "", padding) or infer_padding_mode(inspect_tflite(data))
    if mode not in PADDING_MODES:
        raise ValueError(f"padding mode {mode!r}; choose from {', '.join(PADDING_MODES)}")
    artifact = LceArtifact(data, graph, mode, threads, layerwise)
    inputs = make_inputs(tuple(graph.input_shape), n_inputs, seed)
    return check(artifact, graph, onnx_path, inputs=inputs, seed=seed, layerwise=layerwise)


def verify(
    onnx_path: Path, artifact_path: Path, graph: ir.Graph, *, summary: dict[str, Any], n_inputs: int
) -> dict[str, Any]:
    """The back-end entry point (converters/backends/__init__.py), also the tflite back end's:
    the padding the conversion used is in its summary."""
    return verify_lce(
        onnx_path,
        artifact_path,
        n_inputs=n_inputs,
        padding=summary.get("padding_mode"),
        graph=graph,
    )

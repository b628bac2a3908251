"""Fidelity check of an LCE ``.tflite`` against onnxruntime and against the IR.

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
  verify.py) cannot hide or fake a converter error.

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

import copy
from pathlib import Path
from typing import Any

import numpy as np

from converters import ir, reference
from converters.tflite_inspect import LCE_BCONV2D, TFLiteSummary, inspect_tflite
from converters.to_lce import PADDING_MODES, flatten_order, plan_graph_padding, tensor_owner
from converters.verify import E2E_RTOL, LAYER_RTOL, _ort_session, _rel, make_inputs


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


# ----------------------------------------------------------------------------- reference


class _Reference:
    """The IR in numpy (converters/reference.py), binary convs padded per ``mode``."""

    def __init__(self, graph: ir.Graph, mode: str) -> None:
        self.graph = graph
        # by node identity: ONNX node names need not be unique
        self.read_pads = {id(n): p.read_pads for n, p in zip(
            graph.binary_convs(), plan_graph_padding(graph, mode), strict=True)}
        self.one = mode == "one"

    def node(self, n: ir.Node, ins: list[np.ndarray]) -> np.ndarray:
        if self.one and isinstance(n, ir.BinConv) and any(self.read_pads[id(n)]):
            # +1 padding of the taps the conv reads (those it does not read change nothing)
            read = copy.copy(n)
            read.pads = self.read_pads[id(n)]
            return reference.run_layer(read, ins, reference.PAD_ONE)
        return reference.run_layer(n, ins)

    def run(self, x: np.ndarray, given: dict[str, np.ndarray] | None = None,
            target: str | None = None) -> np.ndarray:
        """Evaluate up to ``target`` (default: the graph output); values in ``given`` (other
        than the target itself) are taken as they are instead of being recomputed."""
        given = given or {}
        target = target or self.graph.output
        values: dict[str, np.ndarray] = {self.graph.input: x}
        producer = {n.output: n for n in self.graph.nodes}

        def value(name: str) -> np.ndarray:
            if name in values:
                return values[name]
            if name in given and name != target:
                return given[name]
            n = producer[name]
            out = self.node(n, [value(i) for i in n.inputs])
            values[name] = out
            return out

        return value(target)


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


# ----------------------------------------------------------------------------- verify


def _interpreter(data: bytes, threads: int) -> Any:
    from converters.to_lce import import_tf

    import_tf()  # larq_compute_engine's package import pulls in TensorFlow
    from larq_compute_engine.tflite.python.interpreter import Interpreter

    return Interpreter(data, num_threads=threads)


def _run(interp: Any, x_nchw: np.ndarray) -> list[np.ndarray]:
    x = np.ascontiguousarray(np.transpose(x_nchw, (0, 2, 3, 1)) if x_nchw.ndim == 4 else x_nchw)
    out = interp.predict(x)
    return [np.asarray(o, np.float32) for o in (out if isinstance(out, list) else [out])]


def _e2e(y: np.ndarray, ref: np.ndarray) -> dict[str, Any]:
    y = y.reshape(ref.shape)
    err = float(np.abs(y - ref).max())
    top_ref = ref.reshape(ref.shape[0], -1).argmax(axis=1)
    top_y = y.reshape(y.shape[0], -1).argmax(axis=1)
    return {"max_abs_err": err, "max_rel_err": _rel(err, ref),
            "top1_agree": bool(np.array_equal(top_ref, top_y))}


def _agg(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "max_abs_err": max((r["max_abs_err"] for r in rows), default=0.0),
        "max_rel_err": max((r["max_rel_err"] for r in rows), default=0.0),
        "top1_agreement": sum(r["top1_agree"] for r in rows) / max(len(rows), 1),
        "n_within_tolerance": sum(r["max_rel_err"] <= E2E_RTOL and r["top1_agree"]
                                  for r in rows),
        "per_input": rows,
    }


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
    returns a JSON-serialisable report. ``padding`` (``exact`` or ``zero``, ``one``) defaults
    to what the flatbuffer shows."""
    from converters.onnx_frontend import load_ir

    data = Path(tflite_path).read_bytes()
    fb = inspect_tflite(data)
    if graph is None:
        graph = load_ir(onnx_path)
    # "zero" is how summaries name exact padding (padding_mode), "exact" how convert_lce does
    mode = {"zero": "exact"}.get(padding or "", padding) or infer_padding_mode(fb)
    if mode not in PADDING_MODES:
        raise ValueError(f"padding mode {mode!r}; choose from {', '.join(PADDING_MODES)}")
    has_binary = bool(graph.binary_convs())
    ref = _Reference(graph, mode)
    probes = _probe_tensors(graph, fb) if layerwise else {}
    probes.pop(graph.output, None)  # the model output is the interpreter's output anyway
    names = sorted(probes, key=lambda v: probes[v])
    try:
        interp = _interpreter(data, threads)
        probe_interp = (_interpreter(with_extra_outputs(data, [probes[v] for v in names]),
                                     threads) if names else None)
    except Exception as exc:  # the interpreter rejects the file: a verdict, not a crash
        return {"backend": "lce-interpreter", "passed": False, "padding_mode": mode,
                "verdict": f"failed: LCE interpreter cannot load the model: {exc}"}
    sess = _ort_session(onnx_path, [])
    in_name, out_name = sess.get_inputs()[0].name, sess.get_outputs()[0].name

    vs_onnx, vs_ref, probe_same = [], [], True
    layer_worst: dict[str, float] = {}
    for x in make_inputs(tuple(graph.input_shape), n_inputs, seed):
        y = _to_nchw(_run(interp, x)[0])
        onnx_y = np.asarray(sess.run([out_name], {in_name: x})[0], np.float32)
        vs_onnx.append(_e2e(y, onnx_y))
        vs_ref.append(_e2e(y, ref.run(x)))
        if not layerwise:
            continue
        got: dict[str, np.ndarray] = {}
        if probe_interp is not None:
            outs = probe_interp.predict(np.ascontiguousarray(np.transpose(x, (0, 2, 3, 1))))
            outs = [np.asarray(o, np.float32) for o in outs]
            probe_same &= bool(np.array_equal(_to_nchw(outs[0]), y))
            got = {v: _probe_to_ir(graph, v, o) for v, o in zip(names, outs[1:], strict=True)}
        # the model output too: its node is then checked from the artifact's inputs to it
        got[graph.output] = y.reshape(graph.shapes[graph.output])
        for n in graph.nodes:
            if n.output not in got:
                continue
            r = ref.run(x, got, target=n.output)
            err = _rel(float(np.abs(got[n.output] - r).max()), r)
            layer_worst[n.name] = max(layer_worst.get(n.name, 0.0), err)
    return _report(graph, fb, mode, has_binary, vs_onnx, vs_ref, layer_worst, probe_same,
                   layerwise, n_inputs, seed, threads)


def _report(graph: ir.Graph, fb: TFLiteSummary, mode: str, has_binary: bool,
            vs_onnx: list, vs_ref: list, layer_worst: dict[str, float], probe_same: bool,
            layerwise: bool, n_inputs: int, seed: int, threads: int) -> dict[str, Any]:
    def ok(rows: list) -> list[bool]:
        return [r["max_rel_err"] <= E2E_RTOL and r["top1_agree"] for r in rows]

    failed_layers = sorted(k for k, v in layer_worst.items() if v > LAYER_RTOL)
    # the output node is always checked when probes ran, and every node without a tensor of
    # its own is recomputed inside the check of a later one: all nodes are covered
    out_node = next((n.name for n in graph.nodes if n.output == graph.output), "")
    layers_ok = out_node in layer_worst and not failed_layers and probe_same
    ref_ok = ok(vs_ref)
    # binary models: every node matching on the artifact's own inputs is the proof;
    # end-to-end misses are then sign flips at thresholds (float rounding) amplified by the
    # network, reported, not failed (ReAct ResNet-18: about half the inputs)
    passed = (has_binary and layers_ok) or (all(ref_ok) and (layers_ok or not layerwise))
    # in exact mode the reference has the ONNX model's semantics
    matches_onnx = (passed and mode == "exact") if has_binary else all(ok(vs_onnx))
    # nodes without a tensor of their own (fused into the next op): recomputed as part of
    # the next checked node
    unchecked = [n.name for n in graph.nodes if n.name not in layer_worst]
    report: dict[str, Any] = {
        "backend": "lce-interpreter",
        "n_inputs": n_inputs,
        "seed": seed,
        "threads": threads,
        "padding_mode": mode,
        "exact_padding": mode == "exact",
        "has_binary_layers": has_binary,
        "n_lce_bconv2d": fb.count(LCE_BCONV2D),
        "vs_onnx": _agg(vs_onnx),
        "vs_reference": {**_agg(vs_ref), "semantics": "zero padding" if mode == "exact"
                         else "binary convs padded with +1 (as converted)"},
        "tolerance": {"end_to_end_rel": E2E_RTOL, "layer_rel": LAYER_RTOL,
                      "relative_to": "max |reference output|"},
        "matches_onnx": bool(matches_onnx),
        "passed": bool(passed),
    }
    # the usual top-level numbers are the deviation from the uploaded model
    report.update({k: report["vs_onnx"][k] for k in ("max_abs_err", "max_rel_err",
                                                     "top1_agreement")})
    if layerwise:
        worst = max(layer_worst.items(), key=lambda kv: kv[1], default=("", 0.0))
        report["layerwise"] = {"checked": len(layer_worst), "max_rel_err": worst[1],
                               "worst_layer": worst[0], "failed": failed_layers,
                               "no_own_tensor": unchecked,
                               "probe_model_output_identical": probe_same}
    n_bad = sum(not o for o in ref_ok)
    if passed:
        verdict = "passed"
        if n_bad:
            verdict += (f": every checked layer within {LAYER_RTOL:g}; {n_bad} of "
                        f"{len(ref_ok)} inputs differ end to end, as one sign flip at a "
                        "threshold (float rounding) propagates through a binary network")
        if not matches_onnx and mode == "one":
            o = report["vs_onnx"]
            verdict += (f"; differs from the ONNX model as expected for +1 padding of binary "
                        f"convs (max rel err {o['max_rel_err']:.3g}, top-1 agreement "
                        f"{o['top1_agreement']:.0%}; see docs/lce.md)")
    else:
        why = []
        if failed_layers:
            why.append(f"layers beyond {LAYER_RTOL:g}: {', '.join(failed_layers[:5])}")
        if not probe_same:
            why.append("the model with probe outputs computes a different output")
        if n_bad:
            why.append(f"{n_bad} of {len(ref_ok)} inputs beyond {E2E_RTOL:g} of the reference "
                       "end to end or with a different top-1")
        verdict = "failed: " + "; ".join(why or ["layer-wise check unavailable"])
    report["verdict"] = verdict
    return report

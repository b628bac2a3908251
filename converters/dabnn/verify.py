"""Fidelity report of a ``.dab`` model, without daBNN: the numpy reference of daBNN's runtime
(reference.py) against the IR (converters/reference.py) and onnxruntime.

* **converter check (layer-wise, teacher-forced)** — the ``.dab`` model runs in the reference,
  keeping every layer's output. Each IR node whose value the ``.dab`` model holds is then
  evaluated under daBNN's semantics (``run_layer(..., DABNN)``: bit = x > 0,
  binary-conv padding −1) on the ``.dab`` model's own values of its inputs, and compared.
  Identical inputs mean identical sign decisions, so differences are float rounding only.
  This is the pass/fail verdict: the file computes what the converter claims.
* **deviation from the ONNX model** — end to end against onnxruntime: reported, not a
  verdict, because daBNN's −1 padding of binary convs is not the ONNX model's zero padding
  (``padding`` in the conversion summary). The IR under its own semantics is reported too.

Real daBNN fidelity (its ARM kernels) can only be confirmed on a board: see docs/dabnn.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from converters import ir
from converters.dabnn import reference
from converters.dabnn.convert import lower
from converters.dabnn.reader import read_dab
from converters.reference import DABNN, FORMAT, run_ir, run_layer

# relative to the layer output's max |value|. A binary conv's Affine holds b = bias + K·scale
# and daBNN computes a·pop + b: float32 rounding of those K-sized terms (K up to 4608 in
# ResNet) costs ~K·2^-24 relative precision, which is what daBNN computes too.
LAYER_RTOL = 1e-4


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    scale = float(np.abs(b).max()) if b.size else 0.0
    err = float(np.abs(a - b).max()) if b.size else 0.0
    return err / scale if scale > 0 else err


def make_inputs(shape: tuple[int, ...], n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        x = rng.standard_normal(shape).astype(np.float32)
        x[x == 0] = np.float32(1e-3)  # Sign(0) is 0 in ONNX, +1 in the IR, -1 in daBNN
        out.append(x)
    return out


def layerwise(graph: ir.Graph, exact: dict[str, str], snaps: dict[str, np.ndarray],
              x: np.ndarray) -> dict[str, float]:
    """Relative error of every IR node the ``.dab`` model materialises (teacher-forced)."""
    vals: dict[str, np.ndarray] = {graph.input: x}
    errs: dict[str, float] = {}
    for n in graph.nodes:
        y = run_layer(n, [vals[i] for i in n.inputs], DABNN)
        t = exact.get(n.output)
        if t is not None and t in snaps:
            d = reference.nhwc_to_ir(snaps[t][None], graph.shapes[n.output])
            errs[n.name] = _rel(d, y)
            y = d  # continue from daBNN's value: keeps later sign decisions identical
        vals[n.output] = y
    return errs


def verify_dabnn(onnx_path: str | Path | None, dab_path: str | Path, graph: ir.Graph,
                 n_inputs: int = 2, seed: int = 0) -> dict[str, Any]:
    """JSON-serialisable report; ``passed`` is the converter check (see module doc)."""
    model = read_dab(dab_path)
    exact = lower(graph).exact
    sess = None
    if onnx_path is not None:
        from converters.verify import _ort_session

        sess = _ort_session(onnx_path, [])
    checked: dict[str, float] = {}
    per_input = []
    for x in make_inputs(tuple(graph.input_shape), n_inputs, seed):
        y_nhwc, snaps = reference.execute(model, np.transpose(x, (0, 2, 3, 1)), snapshots=True)
        errs = layerwise(graph, exact, snaps, x)
        for k, v in errs.items():
            checked[k] = max(checked.get(k, 0.0), v)
        out_shape = graph.shapes[graph.output]
        y = reference.nhwc_to_ir(y_nhwc, out_shape)
        row: dict[str, Any] = {}
        for name, sem in (("dabnn", DABNN), ("ir", FORMAT)):
            ref = run_ir(graph, x, sem)[graph.output]
            row[f"vs_ir_{name}_semantics"] = _cmp(y, ref)
        if sess is not None:
            ref = np.asarray(sess.run(None, {sess.get_inputs()[0].name: x})[0], np.float32)
            row["vs_onnxruntime"] = _cmp(y, ref.reshape(y.shape))
        per_input.append(row)
    failed = sorted(k for k, v in checked.items() if v > LAYER_RTOL)
    worst = max(checked.items(), key=lambda kv: kv[1], default=("", 0.0))
    report: dict[str, Any] = {
        "backend": "numpy reference of daBNN's runtime (no daBNN here)",
        "n_inputs": n_inputs,
        "seed": seed,
        "layerwise": {"checked": len(checked), "max_rel_err": worst[1],
                      "worst_layer": worst[0], "failed": failed,
                      "tolerance": LAYER_RTOL, "semantics": "daBNN (bit = x > 0, binary-conv "
                      "padding -1)"},
        "per_input": per_input,
        "passed": not failed and bool(checked),
    }
    if sess is not None:
        report["vs_onnxruntime"] = {
            "max_rel_err": max(r["vs_onnxruntime"]["max_rel_err"] for r in per_input),
            "top1_agreement": float(np.mean([r["vs_onnxruntime"]["top1_agree"]
                                             for r in per_input])),
            "note": "expected to differ where binary convs are padded: daBNN pads them with "
                    "-1, the ONNX model with 0",
        }
    report["verdict"] = (
        "passed: the .dab model equals the ONNX model under daBNN's semantics layer by layer"
        if report["passed"] else
        f"failed: layers beyond {LAYER_RTOL:g}: {', '.join(failed[:5]) or 'none checked'}")
    return report


def _cmp(y: np.ndarray, ref: np.ndarray) -> dict[str, Any]:
    y2, r2 = y.reshape(y.shape[0], -1), ref.reshape(ref.shape[0], -1)
    return {"max_abs_err": float(np.abs(y - ref).max()), "max_rel_err": _rel(y, ref),
            "top1_agree": bool(np.array_equal(y2.argmax(1), r2.argmax(1)))}

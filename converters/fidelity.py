"""The one fidelity harness: a converted artifact against onnxruntime on the source ONNX model
(and against the IR in numpy), end to end and layer by layer, with one report schema for
every back end.

Each back end supplies an :class:`Artifact` — how to run its file, what its numpy reference is,
how to check its layers one by one — and :func:`check` does the rest on the same random inputs
(:func:`make_inputs`: standard normal, no exact zeros, since ONNX ``Sign(0)`` is 0 where the
engines' sign(0) is ±1):

* **end to end** — the artifact's output against onnxruntime's (``vs_onnx``: the deviation
  from the model the user uploaded) and, where the back end has one, against the IR in numpy
  under the artifact's own semantics (``vs_reference``: e.g. daBNN's −1 padding). Per input:
  max abs error, max error relative to the reference's max |value| (:func:`rel_err`), top-1
  agreement. Tolerance ``E2E_RTOL``.
* **layer-wise** — every layer computed from bit-identical inputs (onnxruntime's values of
  them, or the artifact's own) and compared with its reference value; tolerance ``LAYER_RTOL``
  of the layer output's max |value|. A binary conv then sees the same input bits, so only float
  rounding remains.

Why both: in a binary network a rounding difference that moves one pre-sign value across 0
flips one bit, and random binary networks amplify one flip into a visibly different output
(the zoo's ResNet-18 changes by ~20 % of its max logit). That says nothing about the
conversion, so for models with binary convs the verdict allows a share of the inputs
(:attr:`Policy.binary_misses`) to miss the end-to-end tolerance *provided every layer passes*.
FP32-only models must pass end to end on every input (and every layer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from converters import ir, reference
from converters.numpy_ops import BinarySemantics

LAYER_RTOL = 1e-4
E2E_RTOL = 1e-4


def make_inputs(shape: tuple[int, ...], n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    xs = []
    for _ in range(n):
        x = rng.standard_normal(shape).astype(np.float32)
        x[x == 0] = np.float32(1e-3)  # keep Sign(0) (0 in ONNX, ±1 in the engines) out of it
        xs.append(x)
    return xs


def rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    """max |got − ref| relative to max |ref| (the absolute error where ref is all zero)."""
    ref = np.asarray(ref)
    if not ref.size:
        return 0.0
    err = float(np.abs(np.asarray(got).reshape(ref.shape) - ref).max())
    scale = float(np.abs(ref).max())
    return err / scale if scale > 0 else err


def agreement(y: np.ndarray, ref: np.ndarray) -> dict[str, Any]:
    """One input's end-to-end row: max abs/rel error and whether top-1 agrees."""
    ref = np.asarray(ref, np.float32)
    y = np.asarray(y, np.float32).reshape(ref.shape)
    top_ref = ref.reshape(ref.shape[0], -1).argmax(axis=1)
    top_y = y.reshape(y.shape[0], -1).argmax(axis=1)
    return {
        "max_abs_err": float(np.abs(y - ref).max()),
        "max_rel_err": rel_err(y, ref),
        "top1_agree": bool(np.array_equal(top_ref, top_y)),
    }


def teacher_forced(
    graph: ir.Graph,
    x: np.ndarray,
    exposed: dict[str, np.ndarray],
    semantics: BinarySemantics = reference.FORMAT,
) -> dict[str, float]:
    """Relative error of every IR node whose value an artifact exposes (``exposed``, by IR
    value name, in the IR's layout), each recomputed by the numpy reference under
    ``semantics`` from the artifact's own values of its inputs — identical inputs, so identical
    sign decisions. Values the artifact does not expose (fused into a later op) are recomputed
    on the way, so their nodes are checked inside the next exposed one."""
    values: dict[str, np.ndarray] = {graph.input: x}
    errs: dict[str, float] = {}
    for n in graph.nodes:
        y = reference.run_layer(n, [values[i] for i in n.inputs], semantics)
        if n.output in exposed:
            errs[n.name] = rel_err(exposed[n.output], y)
            y = exposed[n.output]  # go on from the artifact's value
        values[n.output] = y
    return errs


@dataclass
class EndToEnd:
    """The artifact's outputs against one reference, input by input."""

    rows: list[dict[str, Any]] = field(default_factory=list)

    def ok(self) -> list[bool]:
        return [r["max_rel_err"] <= E2E_RTOL and r["top1_agree"] for r in self.rows]

    def misses(self) -> int:
        return sum(not ok for ok in self.ok())

    def summary(self) -> dict[str, Any]:
        return {
            "max_abs_err": max((r["max_abs_err"] for r in self.rows), default=0.0),
            "max_rel_err": max((r["max_rel_err"] for r in self.rows), default=0.0),
            "top1_agreement": sum(r["top1_agree"] for r in self.rows) / max(len(self.rows), 1),
            "n_within_tolerance": sum(self.ok()),
            "per_input": self.rows,
        }


@dataclass(frozen=True)
class Policy:
    """How a back end's verdict weighs end-to-end misses.

    ``gate``: the end-to-end comparison that must hold (``onnx``, ``reference``, or None where
    the layer-wise check alone decides). ``binary_misses``: the share of inputs that may miss it
    in a model with binary convs whose every layer passes (sign flips at thresholds)."""

    gate: Literal["onnx", "reference"] | None = "onnx"
    binary_misses: float = 0.5


class ArtifactError(Exception):
    """The runtime refused the artifact or failed running it: a verdict, not a crash."""


class Artifact:
    """What one back end tells the harness about its artifact (defaults: nothing to add)."""

    #: what runs the artifact, as reported (``native``, ``lce-interpreter``, ...)
    backend: str = ""
    #: a remark for the report (e.g. which executor stood in for an unavailable one)
    note: str = ""
    #: what the numpy reference computes, when there is one
    reference_semantics: str = ""
    #: why the layer-wise check cannot run on this artifact ("" when it can)
    layers_unavailable: str = ""
    #: whether the artifact has binary layers, where its file says so (else: the IR's)
    has_binary_layers: bool | None = None
    #: how the back end's verdict weighs end-to-end misses
    policy: Policy = Policy()
    #: the threads its runtime runs with
    threads: int = 1

    def open(self) -> None:
        """Load the artifact into its runtime; raise :class:`ArtifactError` if refused."""

    def onnx_values(self) -> list[str]:
        """Intermediate ONNX values the layer-wise check reads from onnxruntime."""
        return []

    def run(self, x: np.ndarray) -> np.ndarray:
        """The artifact's output for one NCHW input, in the IR's layout."""
        raise NotImplementedError

    def reference(self, x: np.ndarray) -> np.ndarray | None:
        """The IR in numpy under the artifact's semantics (``vs_reference``), if it has one."""
        return None

    def layer_errors(
        self, x: np.ndarray, y: np.ndarray, onnx: dict[str, np.ndarray]
    ) -> dict[str, float]:
        """Relative error of every IR node checked on this input (``y``: the artifact's output,
        ``onnx``: onnxruntime's values by name)."""
        return {}

    def layer_coverage(self, worst: dict[str, float]) -> tuple[bool, dict[str, Any], list[str]]:
        """Whether the layers checked cover the model, back-end details for ``layerwise``, and
        problems that fail the verdict."""
        return bool(worst), {}, []

    def details(self) -> dict[str, Any]:
        """Back-end keys of every report, failed or not."""
        return {}

    def conclude(
        self, passed: bool, vs_onnx: EndToEnd | None, vs_reference: EndToEnd | None
    ) -> tuple[dict[str, Any], list[str]]:
        """Back-end keys that depend on the outcome, and notes for a passing verdict."""
        return {}, []


@dataclass
class FidelityReport:
    """The report of every back end (``to_dict`` is what summaries and the coordinator store).

    Top-level ``max_abs_err``/``max_rel_err``/``top1_agreement``/``per_input`` are the deviation
    from onnxruntime (``vs_onnx``); ``layerwise`` has ``checked``, ``max_rel_err``,
    ``worst_layer``, ``failed`` and the back end's own details; back-end keys sit at the top
    level (``extra``)."""

    backend: str  # what ran the artifact
    n_inputs: int
    seed: int
    threads: int
    passed: bool = False
    verdict: str = ""
    # the rest is known once the comparisons ran (a failed run has only the above)
    has_binary_layers: bool | None = None
    vs_onnx: EndToEnd | None = None
    vs_reference: EndToEnd | None = None
    reference_semantics: str = ""
    gate: str | None = None
    layerwise: dict[str, Any] | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "backend": self.backend,
            "n_inputs": self.n_inputs,
            "seed": self.seed,
            "threads": self.threads,
        }
        if self.has_binary_layers is not None:
            out["has_binary_layers"] = self.has_binary_layers
            out["tolerance"] = {
                "end_to_end_rel": E2E_RTOL,
                "layer_rel": LAYER_RTOL,
                "relative_to": "max |onnxruntime output|"
                if self.gate == "onnx"
                else "max |reference output|",
            }
        if self.vs_onnx is not None:
            s = self.vs_onnx.summary()
            out.update(
                {k: s[k] for k in ("max_abs_err", "max_rel_err", "top1_agreement", "per_input")}
            )
            out["vs_onnx"] = s
        if self.vs_reference is not None:
            out["vs_reference"] = {
                **self.vs_reference.summary(),
                "semantics": self.reference_semantics,
            }
        if self.layerwise is not None:
            out["layerwise"] = self.layerwise
        if self.note:
            out["note"] = self.note
        out.update(self.extra)
        out["passed"] = bool(self.passed)
        out["verdict"] = self.verdict
        return out


def ort_session(onnx_path: str | Path, extra_outputs: list[str]) -> Any:
    """onnxruntime on the source model, with ``extra_outputs`` (intermediate values) added to
    the graph's outputs."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    model = onnx.load(str(onnx_path))
    present = {o.name for o in model.graph.output}
    for name in extra_outputs:
        if name not in present:
            model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
            present.add(name)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


class _OnnxRuntime:
    def __init__(self, onnx_path: str | Path, extra: list[str]) -> None:
        self.sess = ort_session(onnx_path, extra)
        self.input = self.sess.get_inputs()[0].name
        self.output = self.sess.get_outputs()[0].name
        self.fetch = [self.output] + [e for e in extra if e != self.output]

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        values = self.sess.run(self.fetch, {self.input: x})
        return {k: np.asarray(v, np.float32) for k, v in zip(self.fetch, values, strict=True)}


class _Failed(Exception):
    def __init__(self, verdict: str) -> None:
        super().__init__(verdict)
        self.verdict = verdict


def check(
    artifact: Artifact,
    graph: ir.Graph,
    onnx_path: str | Path | None,
    *,
    inputs: list[np.ndarray],
    seed: int,
    layerwise: bool = True,
) -> dict[str, Any]:
    """Run the comparisons (module docstring) under the artifact's policy and return the
    JSON-serialisable report."""
    report = FidelityReport(
        artifact.backend, len(inputs), seed, artifact.threads, extra=artifact.details()
    )
    try:
        _check(artifact, graph, onnx_path, inputs, layerwise, report)
    except _Failed as exc:
        report.verdict = exc.verdict
    report.backend = artifact.backend
    report.note = artifact.note
    return report.to_dict()


def _check(
    artifact: Artifact,
    graph: ir.Graph,
    onnx_path: str | Path | None,
    inputs: list[np.ndarray],
    layerwise: bool,
    report: FidelityReport,
) -> None:
    policy = artifact.policy
    do_layers = layerwise and not artifact.layers_unavailable
    ort = None
    if onnx_path is not None:
        try:
            ort = _OnnxRuntime(onnx_path, artifact.onnx_values() if do_layers else [])
        except Exception as exc:  # onnxruntime's own exception types vary by build
            raise _Failed(f"failed: onnxruntime cannot load the source model: {exc}") from exc
    try:
        artifact.open()
    except ArtifactError as exc:
        raise _Failed(f"failed: {artifact.backend} backend error: {exc}") from exc

    vs_onnx = EndToEnd() if ort is not None else None
    vs_ref: EndToEnd | None = None
    worst: dict[str, float] = {}
    for x in inputs:
        onnx: dict[str, np.ndarray] = {}
        if ort is not None:
            try:
                onnx = ort.run(x)
            except Exception as exc:
                raise _Failed(f"failed: onnxruntime cannot run the source model: {exc}") from exc
        try:
            y = artifact.run(x)
            if ort is not None and vs_onnx is not None:
                vs_onnx.rows.append(agreement(y, onnx[ort.output]))
            ref = artifact.reference(x)
            if ref is not None:
                vs_ref = vs_ref or EndToEnd()
                vs_ref.rows.append(agreement(y, ref))
            if do_layers:
                for name, err in artifact.layer_errors(x, y, onnx).items():
                    worst[name] = max(worst.get(name, 0.0), err)
        except ArtifactError as exc:
            raise _Failed(f"failed: {artifact.backend} backend error: {exc}") from exc

    has_binary = artifact.has_binary_layers
    if has_binary is None:
        has_binary = bool(graph.binary_convs())
    complete, details, problems = artifact.layer_coverage(worst) if do_layers else (False, {}, [])
    failed = sorted(k for k, v in worst.items() if v > LAYER_RTOL)
    layers_ok = do_layers and complete and not failed
    gate = {"onnx": vs_onnx, "reference": vs_ref, None: None}[policy.gate] or EndToEnd()
    n_bad = gate.misses()
    if has_binary and layers_ok:
        passed = n_bad <= math.floor(policy.binary_misses * len(gate.rows))
    else:
        passed = all(gate.ok()) and (layers_ok or not do_layers)

    report.has_binary_layers = has_binary
    report.vs_onnx, report.vs_reference = vs_onnx, vs_ref
    report.reference_semantics = artifact.reference_semantics
    report.gate = policy.gate
    if do_layers:
        name, err = max(worst.items(), key=lambda kv: kv[1], default=("", 0.0))
        report.layerwise = {
            "checked": len(worst),
            "max_rel_err": err,
            "worst_layer": name,
            "failed": failed,
            **details,
        }
    elif layerwise:
        report.layerwise = {"checked": 0, "note": artifact.layers_unavailable}
    extra, notes = artifact.conclude(passed, vs_onnx, vs_ref)
    report.extra.update(extra)
    report.passed = passed
    against = "of onnxruntime" if policy.gate == "onnx" else "of the reference"
    report.verdict = _verdict(passed, failed, problems, n_bad, len(gate.rows), against, notes)


def _verdict(
    passed: bool,
    failed: list[str],
    problems: list[str],
    n_bad: int,
    n: int,
    against: str,
    notes: list[str],
) -> str:
    if passed:
        parts = ["passed"]
        if n_bad:
            parts.append(
                f"every checked layer within {LAYER_RTOL:g}; {n_bad} of {n} inputs "
                "differ end to end, as one sign flip at a threshold (float rounding) "
                "propagates through a binary network"
            )
        parts += notes
        return parts[0] + (": " + "; ".join(parts[1:]) if len(parts) > 1 else "")
    why = []
    if failed:
        why.append(f"layers beyond {LAYER_RTOL:g}: {', '.join(failed[:5])}")
    why += problems
    if n_bad:
        why.append(
            f"{n_bad} of {n} inputs beyond {E2E_RTOL:g} {against} end to end or with a "
            "different top-1"
        )
    return "failed: " + "; ".join(why or ["layer-wise check unavailable"])

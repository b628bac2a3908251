"""IR (FP32 models) → plain TFLite for tflite-runtime, with the LCE back end's toolchain."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from converters import ir
from converters.backends.lce.convert import (
    artifact_summary,
    lce_flatbuffer,
    release,
    write_atomic,
)
from converters.backends.lce.keras import build_keras_model
from converters.backends.tflite.flatbuffer import inspect_tflite
from converters.errors import ConversionError, UnsupportedModelError


def convert_tflite(graph: ir.Graph, out_path: str | Path, meta: dict) -> dict[str, Any]:
    """FP32 model → plain TFLite (builtin ops only) for tflite-runtime.

    Made by the same converter as the LCE artifacts (TF 2.16's MLIR converter inside LCE;
    its LCE passes change nothing in a graph without binary activations), so the FP32
    baseline is the same file for both libraries; ``tf.lite.TFLiteConverter`` would give the
    same ops at a much higher first-call cost. Binary convs are refused: tflite-runtime has
    no binary kernels (use library "lce")."""
    bins = graph.binary_convs()
    if bins:
        raise UnsupportedModelError(
            f"tflite-runtime has no binary kernels: {len(bins)} binarized convs (first "
            f"{bins[0].name!r}); convert this model for library 'lce'"
        )
    model = build_keras_model(graph)
    try:
        data = lce_flatbuffer(model)
    except Exception as exc:
        raise ConversionError(f"TFLite conversion failed: {type(exc).__name__}: {exc}") from exc
    finally:
        release(model)
    fb = inspect_tflite(data)
    if fb.custom_ops:  # tflite-runtime could not load it
        raise ConversionError(f"TFLite conversion produced custom ops {fb.custom_ops}")
    out = write_atomic(data, out_path)
    summary = artifact_summary("tflite", graph, data, out, meta, fb, "exact", [])
    summary["converter"] = "bnnbench-converters/tflite"
    return summary


def convert(graph: ir.Graph, out_path: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """The back-end entry point (converters/backends/__init__.py)."""
    summary = convert_tflite(graph, out_path, meta)
    summary.pop("output", None)  # the caller names the final file
    return summary

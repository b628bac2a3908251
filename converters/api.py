"""Public Python API of the converters (what the coordinator's conversion worker calls).

``analyze(onnx_path)`` and ``convert(onnx_path, library, out_path)`` return JSON-serialisable
dicts and raise :class:`converters.errors.ConversionError` subclasses for problems with the
model (shown to the user as is)."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

from converters.errors import UnsupportedModelError

LIBRARIES = ("native", "lce", "tflite", "dabnn")
IMPLEMENTED = ("native", "lce", "tflite", "dabnn")


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def analyze(onnx_path: str | Path) -> dict[str, Any]:
    """Per-node binarization report, totals and the theoretical track (see analyze.py)."""
    from converters.analyze import analyze_file

    result = analyze_file(onnx_path)
    result["source"] = {
        "file": Path(onnx_path).name,
        "sha256": sha256_file(onnx_path),
        "size_bytes": Path(onnx_path).stat().st_size,
    }
    return result


def convert(
    onnx_path: str | Path,
    library: str,
    out_path: str | Path,
    *,
    verify: bool = True,
    verify_inputs: int = 2,
) -> dict[str, Any]:
    """Convert an ONNX model for ``library`` and write it to ``out_path``.

    ``onnx_path`` may also be a ``.zip``/``.tar[.gz]`` holding one ``.onnx`` and its external
    data (see :func:`converters.onnx_frontend.model_file`); ``source_sha256``/``source_file``
    then describe the archive as uploaded.

    With ``verify`` (the default) the written model is run against onnxruntime (see
    :func:`converters.verify.verify_native`) and the report is part of the summary; a failed
    verification does not raise, the summary's ``fidelity.passed`` says so."""
    from converters.onnx_frontend import model_file

    with model_file(onnx_path) as model_path:
        return _convert_file(model_path, library, out_path, verify=verify,
                             verify_inputs=verify_inputs, source=Path(onnx_path))


def _convert_file(
    onnx_path: Path,
    library: str,
    out_path: str | Path,
    *,
    verify: bool,
    verify_inputs: int,
    source: Path,
) -> dict[str, Any]:
    if library not in LIBRARIES:
        raise UnsupportedModelError(
            f"unknown library {library!r}; choose from {', '.join(LIBRARIES)}"
        )
    if library not in IMPLEMENTED:
        raise UnsupportedModelError(f"library {library}: not implemented yet")

    from converters.analyze import analyze_graph
    from converters.onnx_frontend import load_ir
    from converters.to_native import CONVERTER_NAME, CONVERTER_VERSION, write_native

    t0 = time.perf_counter()
    src_sha = sha256_file(source)
    graph = load_ir(onnx_path)
    analysis = analyze_graph(graph)
    meta = {
        "source_sha256": src_sha,
        "source_file": source.name,
        "arch": analysis["arch"],
        "algorithm": analysis["algorithm"],
    }
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    try:
        if library == "dabnn":
            from converters.dabnn import convert_dabnn

            backend = convert_dabnn(graph, tmp, meta)
        elif library in ("lce", "tflite"):
            from converters.to_lce import convert_lce, convert_tflite

            backend = (convert_lce if library == "lce" else convert_tflite)(graph, tmp, meta)
            backend.pop("output", None)
        else:
            data = write_native(graph, tmp, meta)
            backend = {
                "size_bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
                "padding_mode": "zero",
                "converter": CONVERTER_NAME,
                "converter_version": CONVERTER_VERSION,
            }
        os.replace(tmp, out)  # never leave a half-written artifact under the final name
    finally:
        tmp.unlink(missing_ok=True)
    summary: dict[str, Any] = {
        **backend,
        "library": library,
        "output": str(out),
        "source_sha256": src_sha,
        "arch": analysis["arch"],
        "algorithm": analysis["algorithm"],
        "n_layers": len(graph.nodes),
        "n_binary_convs": analysis["n_binary_convs"],
        "n_convs": analysis["n_convs"],
        "binarized_nodes": analysis["binarized_nodes"],
        "theoretical": {k: analysis["theoretical"][k] for k in ("speedup", "compression", "om")},
    }
    if verify:
        if library == "dabnn":
            from converters.dabnn import verify_dabnn

            summary["fidelity"] = verify_dabnn(onnx_path, out, graph, n_inputs=verify_inputs)
        elif library in ("lce", "tflite"):
            from converters.lce_verify import verify_lce

            summary["fidelity"] = verify_lce(
                onnx_path, out, n_inputs=verify_inputs, padding=backend["padding_mode"],
                graph=graph,
            )
        else:
            from converters.verify import verify_native

            summary["fidelity"] = verify_native(
                onnx_path, out, n_inputs=verify_inputs, graph=graph
            )
    summary["elapsed_s"] = round(time.perf_counter() - t0, 3)
    return summary

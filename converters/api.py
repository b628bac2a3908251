"""Public Python API of the converters (what the coordinator's conversion worker calls).

``analyze(onnx_path)`` and ``convert(onnx_path, library, out_path)`` return JSON-serialisable
dicts and raise :class:`converters.errors.ConversionError` subclasses for problems with the
model (shown to the user as is). ``convert`` runs the front end, then the library's back end
from the registry (converters/backends/__init__.py)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from bnnbench.digest import sha256_file
from converters.backends import Backend, get_backend


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
    data (see :func:`converters.frontend.model_file`); ``source_sha256``/``source_file`` then
    describe the archive as uploaded.

    With ``verify`` (the default) the written model is checked by its back end's fidelity
    check (converters/fidelity.py) and the report is the summary's ``fidelity``; a failed
    verification does not raise, ``fidelity.passed`` says so."""
    from converters.frontend import model_file

    backend = get_backend(library)  # an unknown library is refused before any work
    with model_file(onnx_path) as model_path:
        return _convert_file(
            model_path,
            backend,
            out_path,
            verify=verify,
            verify_inputs=verify_inputs,
            source=Path(onnx_path),
        )


def _convert_file(
    onnx_path: Path,
    backend: Backend,
    out_path: str | Path,
    *,
    verify: bool,
    verify_inputs: int,
    source: Path,
) -> dict[str, Any]:
    from converters.analyze import analyze_graph
    from converters.frontend import load_ir

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
        artifact = backend.convert(graph, tmp, meta)
        os.replace(tmp, out)  # never leave a half-written artifact under the final name
    finally:
        tmp.unlink(missing_ok=True)
    summary: dict[str, Any] = {
        **artifact,
        "library": backend.name,
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
        summary["fidelity"] = backend.verify(
            onnx_path, out, graph, summary=artifact, n_inputs=verify_inputs
        )
    summary["elapsed_s"] = round(time.perf_counter() - t0, 3)
    return summary

"""Measure the LCE conversion of the zoo: fidelity per padding mode (the numbers in docs/lce.md).

    python -m converters.backends.lce.measure [--out DIR] [--inputs N] [--archs vggsmall,resnet18]

For every zoo model and padding mode ("exact", "one"; FP32 models only "exact"): convert,
then verify (converters/backends/lce/verify.py) on N random inputs; prints one JSON line per model
and a Markdown table. ResNet-34 is slow to convert and verify on two cores (about a minute);
it is covered here rather than in the test suite.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any


def measure(onnx_path: Path, out_dir: Path, padding: str, n_inputs: int) -> dict[str, Any]:
    from converters.backends.lce import convert_lce, verify_lce
    from converters.frontend import load_ir

    graph = load_ir(onnx_path)
    out = out_dir / f"{onnx_path.stem}_{padding}.tflite"
    t0 = time.perf_counter()
    summary = convert_lce(graph, out, {}, padding=padding)
    t_conv = time.perf_counter() - t0
    t0 = time.perf_counter()
    rep = verify_lce(onnx_path, out, n_inputs=n_inputs, padding=padding, graph=graph)
    t_ver = time.perf_counter() - t0
    return {
        "model": onnx_path.stem,
        "padding": padding,
        "size_bytes": summary["size_bytes"],
        "n_binary_convs": summary["n_binary_convs"],
        "n_lce_bconv2d": summary["n_lce_bconv2d"],
        "mappings": sorted({p["mapping"] for p in summary["padding"]}),
        "op_counts": summary["op_counts"],
        "convert_s": round(t_conv, 1),
        "verify_s": round(t_ver, 1),
        "passed": rep["passed"],
        "verdict": rep["verdict"],
        "vs_onnx": {
            k: rep["vs_onnx"][k]
            for k in ("max_abs_err", "max_rel_err", "top1_agreement", "n_within_tolerance")
        },
        "vs_reference": {
            k: rep["vs_reference"][k] for k in ("max_abs_err", "max_rel_err", "top1_agreement")
        },
        "layer_max_rel_err": rep.get("layerwise", {}).get("max_rel_err"),
        "layers_checked": rep.get("layerwise", {}).get("checked"),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--inputs", type=int, default=8)
    ap.add_argument("--archs", default="vggsmall,resnet18,resnet34")
    ap.add_argument("--algorithms", default="fp32,bnn,react")
    args = ap.parse_args(argv)
    from converters.zoo import write_zoo

    out_dir = args.out or Path(tempfile.mkdtemp(prefix="lce_measure_"))
    archs = tuple(a for a in args.archs.split(",") if a)
    algos = tuple(a for a in args.algorithms.split(",") if a)
    entries = write_zoo(out_dir / "zoo", archs=archs, algorithms=algos)
    rows = []
    for e in entries:
        for padding in ("exact",) if e.algorithm == "fp32" else ("exact", "one"):
            row = measure(e.path, out_dir, padding, args.inputs)
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(
        "\n| model | padding | LceBconv2d | size (bytes) | vs ONNX max abs / rel err | "
        "top-1 agreement | vs reference max rel | worst layer rel | verdict |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        o, ref = r["vs_onnx"], r["vs_reference"]
        print(
            f"| {r['model']} | {r['padding']} | {r['n_lce_bconv2d']}/{r['n_binary_convs']} | "
            f"{r['size_bytes']} | {o['max_abs_err']:.3g} / {o['max_rel_err']:.3g} | "
            f"{o['top1_agreement']:.0%} | {ref['max_rel_err']:.3g} | "
            f"{(r['layer_max_rel_err'] or 0):.2g} | {'pass' if r['passed'] else 'FAIL'} |"
        )


if __name__ == "__main__":
    main()

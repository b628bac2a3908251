"""Native FP32 conv / GEMM vs onnxruntime, on ResNet-18's FP32 layer shapes.

    python native/bench/bench_fconv.py [--isa portable avx2] [--threads 1 2]
        [--runs 20] [--repeats 7] [--layers stem ds1 ds2 ds3 fc]

Each layer is a one-node ONNX model built with onnx.helper (a Conv with bias, or a Gemm for
the FC), converted to .bnn by ``converters.api.convert(..., "native", ...)``; the same ONNX
file is what onnxruntime runs. Batch 1. Layers (see LAYERS): the stem (3->64, 7x7, stride 2,
pad 3, 224 -> 112), the three 1x1 stride-2 downsample convs, and the FC (512 -> 1000).

What is timed:

* native: ``NativeEngine.benchmark`` (the public ``bnn_benchmark``): CLOCK_MONOTONIC around
  each whole inference in C, no Python in the timed region. That *includes* the engine's
  model-boundary NCHW -> NHWC input and NHWC -> NCHW output transposes (onnxruntime works in
  NCHW and has none). The ``conv ms`` column is the layer alone, from ``bnn_profile``
  (per-layer stamps; the transposes are its separate last entry; the script checks that
  the converter emitted exactly one layer), so the two differ by the boundary transposes.
* onnxruntime: ``InferenceSession.run_with_iobinding`` with input and output bound to
  preallocated CPU buffers, timed with time.perf_counter around each call, so it includes
  the Python -> C++ call overhead (printed once as "ORT call overhead": the same timing of a
  one-float Identity model). Sessions use intra_op_num_threads = the thread count,
  inter_op_num_threads = 1, sequential execution, all graph optimizations.

Every figure is a median: per repeat, the median of ``--runs`` timed runs (after warmup);
then the median over ``--repeats`` repeats, which are interleaved between the engines so
that load from other processes on a shared machine hits all of them alike. ``best`` is the
fastest single run seen (a guide to the uncontended speed).

    GFLOP/s = 2 * MACs / median seconds,   MACs = out_c * OH * OW * in_c * kh * kw

(bias adds not counted; GFLOP/s from the end-to-end ``ms``). ``vs ORT`` = native ms /
onnxruntime ms at the same thread count (< 1: native is faster); ``conv/ORT`` = native conv
ms / onnxruntime ms, i.e. without the native boundary transposes (onnxruntime's figure
still has its call overhead, and whatever layout work its Conv does internally). The
native output is checked against onnxruntime's (max abs error printed), so a fast wrong
kernel does not go unnoticed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from native.bench.baselines import ort_session  # noqa: E402
from native.engine import NativeEngine, available_isas  # noqa: E402

# name: (in_c, out_c, kernel, stride, pad, input H = W); kernel 0 = Gemm (FC) on (1, in_c)
LAYERS = {
    "stem": (3, 64, 7, 2, 3, 224),
    "ds1": (64, 128, 1, 2, 0, 56),
    "ds2": (128, 256, 1, 2, 0, 28),
    "ds3": (256, 512, 1, 2, 0, 14),
    "fc": (512, 1000, 0, 1, 0, 1),
}


def _onnx_model(name: str, path: Path) -> tuple[tuple[int, ...], int]:
    """Write the layer's one-node ONNX model to ``path``; returns (input shape, MACs)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    c, oc, k, s, p, hw = LAYERS[name]
    rng = np.random.default_rng(oc * 31 + c)
    if k == 0:
        xshape, yshape = (1, c), (1, oc)
        w = (rng.standard_normal((oc, c)) / np.sqrt(c)).astype(np.float32)
        node = helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)
        macs = oc * c
    else:
        o = (hw + 2 * p - k) // s + 1
        xshape, yshape = (1, c, hw, hw), (1, oc, o, o)
        w = (rng.standard_normal((oc, c, k, k)) / np.sqrt(c * k * k)).astype(np.float32)
        node = helper.make_node(
            "Conv", ["x", "w", "b"], ["y"], kernel_shape=[k, k], strides=[s, s], pads=[p] * 4
        )
        macs = oc * o * o * c * k * k
    b = rng.standard_normal(oc).astype(np.float32)
    graph = helper.make_graph(
        [node],
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, xshape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, yshape)],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return xshape, macs


class _OrtTimer:
    """run_with_iobinding on preallocated input/output; per-call perf_counter times in ms."""

    def __init__(self, sess, x: np.ndarray) -> None:
        self.sess, self.x = sess, x
        out = sess.get_outputs()[0]
        self.y = np.empty([int(d) for d in out.shape], np.float32)
        self.bind = sess.io_binding()
        inp = sess.get_inputs()[0].name
        self.bind.bind_cpu_input(inp, x)
        self.bind.bind_output(
            out.name, "cpu", 0, np.float32, list(self.y.shape), self.y.ctypes.data
        )

    def run(self) -> np.ndarray:
        self.sess.run_with_iobinding(self.bind)
        return self.y

    def benchmark(self, warmup: int, runs: int) -> list[float]:
        for _ in range(warmup):
            self.sess.run_with_iobinding(self.bind)
        out = []
        for _ in range(runs):
            t0 = time.perf_counter()
            self.sess.run_with_iobinding(self.bind)
            out.append((time.perf_counter() - t0) * 1e3)
        return out


def _ort_overhead(tmp: Path, runs: int) -> float:
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "id",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, (1,))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, (1,))],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, str(tmp / "identity.onnx"))
    t = _OrtTimer(ort_session(tmp / "identity.onnx", 1), np.zeros(1, np.float32))
    return statistics.median(t.benchmark(100, max(runs, 200)))


def main() -> int:
    from converters.api import convert

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--isa",
        nargs="+",
        default=[i for i in available_isas() if i != "popcnt"],
        help="native kernel sets (popcnt has the portable SGEMM; default: the rest)",
    )
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--runs", type=int, default=20, help="timed runs per repeat")
    ap.add_argument("--repeats", type=int, default=7, help="repeats; median of their medians")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--layers", nargs="+", default=list(LAYERS), choices=list(LAYERS))
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_fconv_") as d:
        tmp = Path(d)
        print(
            f"ORT call overhead (Identity, 1 float): {_ort_overhead(tmp, args.runs) * 1e3:.1f} us"
            " (included in every ORT figure)"
        )
        print(
            "native ms = bnn_benchmark, incl. NCHW<->NHWC boundary transposes; "
            "conv ms = the layer alone (bnn_profile); all medians"
        )
        hdr = (
            f"{'layer':>5s} {'shape':>22s} {'thr':>3s} {'engine':>15s} {'ms':>8s}"
            f" {'conv ms':>8s} {'best':>8s} {'GFLOP/s':>8s} {'vs ORT':>7s} {'conv/ORT':>8s}"
            f" {'max err':>8s}"
        )
        print(hdr)
        print("-" * len(hdr))
        rng = np.random.default_rng(0)
        for name in args.layers:
            onnx_path, bnn_path = tmp / f"{name}.onnx", tmp / f"{name}.bnn"
            xshape, macs = _onnx_model(name, onnx_path)
            convert(onnx_path, "native", bnn_path, verify=False)
            x = rng.standard_normal(xshape).astype(np.float32)
            c, oc, k, s, p, hw = LAYERS[name]
            shape = f"{c}->{oc} fc" if k == 0 else f"{c}->{oc} {k}x{k}/{s} @{hw}"
            for t in args.threads:
                ort_t = _OrtTimer(ort_session(onnx_path, t), x)
                ref = ort_t.run().copy()
                engines = {
                    f"native-{i}": NativeEngine(bnn_path, threads=t, isa=i) for i in args.isa
                }
                try:
                    errs = {n: float(np.max(np.abs(e.run(x) - ref))) for n, e in engines.items()}
                    for e in engines.values():
                        if len(e.profile(x, 0, 1)) != 2:
                            raise SystemExit(f"{name}: the converter emitted more than one layer")
                    timers = {"onnxruntime": lambda r, w, o=ort_t: o.benchmark(w, r)}
                    for n, e in engines.items():
                        timers[n] = lambda r, w, e=e, x=x: e.benchmark(x, w, r)
                    for tm in timers.values():
                        tm(1, args.warmup)
                    reps: dict[str, list[list[float]]] = {n: [] for n in timers}
                    conv_reps: dict[str, list[float]] = {n: [] for n in engines}
                    for _ in range(args.repeats):
                        for n, tm in timers.items():
                            reps[n].append(tm(args.runs, 0))
                        for n, e in engines.items():  # every layer, not the transposes
                            conv_reps[n].append(sum(e.profile(x, 0, args.runs)[:-1]))
                    conv_ms = {n: statistics.median(v) for n, v in conv_reps.items()}
                finally:
                    for e in engines.values():
                        e.close()
                med = {
                    n: statistics.median(statistics.median(r) for r in v) for n, v in reps.items()
                }
                for n, v in reps.items():
                    ms = med[n]
                    best = min(min(r) for r in v)
                    is_ort = n == "onnxruntime"
                    ratio = "" if is_ort else f"{ms / med['onnxruntime']:7.2f}"
                    cm = "" if is_ort else f"{conv_ms[n]:8.3f}"
                    cratio = "" if is_ort else f"{conv_ms[n] / med['onnxruntime']:8.2f}"
                    err = "" if is_ort else f"{errs[n]:8.1e}"
                    row = (
                        f"{name:>5s} {shape:>22s} {t:3d} {n:>15s} {ms:8.3f} {cm:>8s} {best:8.3f}"
                        f" {2 * macs / ms / 1e6:8.1f} {ratio:>7s} {cratio:>8s} {err:>8s}"
                    )
                    print(row, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

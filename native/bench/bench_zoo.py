"""Native engine vs onnxruntime on the model zoo, in one run on one machine.

    python native/bench/bench_zoo.py [--threads 1 2 4 ...] [--runs 15] [--warmup 3] [--json OUT]
        [--isa portable popcnt avx2 ...] [--layers resnet18] [--layers-isa avx2 avx512]
        [--no-lce | --lce-dir DIR]

For every zoo model (ResNet-18/34 at 224², VGG-Small at 32², each FP32 / BNN / ReAct) and
thread count it reports the median latency of the native engine (C monotonic clock around
each inference) and of onnxruntime on the same ONNX (perf_counter around ``session.run``;
that includes a few microseconds of Python call overhead, negligible at these sizes). For
each architecture every engine on every model at every thread count (FP32, BNN, ReAct;
native per ISA, onnxruntime, LCE) is timed in ``--runs`` interleaved rounds of one inference
each, so drift of the machine (shared or throttled cores) affects all of them alike.

Ratios printed:
- ``ort/native``: onnxruntime time over native time on the same model (>1: native faster).
  For binary models onnxruntime executes ``Sign`` + float convs, i.e. no binary kernels.
- ``lce/native``: the Larq Compute Engine interpreter (its x86 build: portable C++ kernels,
  XNNPACK off, as its Python interpreter defaults) on the same model converted to ``.tflite``,
  over native time (``--no-lce`` leaves it out).
- ``vs ort fp32``: onnxruntime FP32 time of the same architecture over this native time.
- ``speedup``: native FP32 over native binary, same architecture and threads (the number the
  hardware track uses).
- ``vs portable``: native time with the portable kernels over native time with this ISA.
Binary models run once per kernel set (``--isa``, default every set this CPU supports);
FP32 models once, with the best set (ISA column ``-``). Thread scaling is printed for
every thread count above 1 against 1 thread. ``--lce-dir`` takes the LCE models from
``.tflite`` files converted on another machine (one without TensorFlow can still run the
LCE interpreter module).

Per-layer times (``--layers``, default ResNet-18; ``--layers none`` skips them): the binary
model of each named architecture, 1 thread, for each set of ``--layers-isa`` (default: the
last of ``--isa``), through ``bnn_profile`` (per-layer
medians; their sum is a little above the end-to-end median because of the clock stamps).
Binary conv rows also give binary ops per cycle (2 ops per bit pair, the clock *measured*
by ``build/bnn-clock`` right before and after the profile) and their share of the peak
assumed for that ISA on this CPU (machine.assumed_peak). On x86-64 the AVX2 kernel's
instruction sequence is timed alone right before and after (bench/peak_avx2.c), which shows
whether the core ran at full speed.
This is a benchmark script, not a test; numbers from emulators (qemu) are meaningless here.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from agent.runners.lce import LceRunner, load_wrapper  # noqa: E402
from converters import api as converters_api  # noqa: E402
from converters import zoo  # noqa: E402
from native.bench.baselines import ort_session  # noqa: E402
from native.bench.machine import (  # noqa: E402
    assumed_peak,
    avx2_sequence_ops_per_ns,
    clock_mhz,
    cpu_model,
)
from native.engine import NativeEngine, available_isas  # noqa: E402
from native.engine import version as native_version  # noqa: E402


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def _time_arch(models: list, x: np.ndarray, args) -> list[dict]:
    """Every engine on every model of one architecture at every thread count, interleaved:
    ``runs`` rounds, each timing one inference of every (model, engine, threads) in turn
    (after a 20 ms pause and an untimed one: the worker threads of the engine before spin
    for a while after their last job and would steal a core), so a machine that speeds up
    or slows down (shared or throttled cores) shifts all of them together and the ratios --
    thread scaling included -- stay fair."""
    timers: dict[tuple[str, str, int], object] = {}
    with contextlib.ExitStack() as stack:
        for t in args.threads:
            for e, bnn_path, lce_path in models:
                sess = ort_session(e.path, t)
                feed = {sess.get_inputs()[0].name: x}
                timers[(e.algorithm, "ort", t)] = lambda s=sess, f=feed: _timed(
                    lambda: s.run(None, f)
                )
                if args.lce and lce_path is not None:
                    interp = load_wrapper().LiteInterpreter(
                        lce_path.read_bytes(), t, False, False, LceRunner().use_xnnpack
                    )
                    xl = np.ascontiguousarray(x.transpose(0, 2, 3, 1))  # LCE is NHWC
                    timers[(e.algorithm, "lce", t)] = lambda i=interp, v=xl: _timed(
                        lambda: i.predict([v])
                    )
                for isa in ["-"] if e.algorithm == "fp32" else args.isa:
                    eng = stack.enter_context(
                        NativeEngine(bnn_path, threads=t, isa=None if isa == "-" else isa)
                    )
                    timers[(e.algorithm, isa, t)] = lambda g=eng: g.benchmark(x, 0, 1)[0]
        for fn in timers.values():
            for _ in range(args.warmup):
                fn()
        samples: dict[tuple[str, str, int], list[float]] = {k: [] for k in timers}
        for _ in range(args.runs):
            for k, fn in timers.items():
                # the engine before may still have worker threads spinning (native, ruy in
                # LCE and onnxruntime all spin a while after a job): let them go to sleep,
                # then one untimed inference, then the timed one
                time.sleep(0.02)
                fn()
                samples[k].append(fn())
    rows = []
    nan = [math.nan]
    for t in args.threads:
        for e, bnn_path, _ in models:
            ortt = samples[(e.algorithm, "ort", t)]
            lcet = samples.get((e.algorithm, "lce", t), nan)
            for isa in ["-"] if e.algorithm == "fp32" else args.isa:
                nat = samples[(e.algorithm, isa, t)]
                rows.append(
                    {
                        "arch": e.arch,
                        "algorithm": e.algorithm,
                        "threads": t,
                        "isa": isa,
                        "native_ms": statistics.median(nat),
                        "ort_ms": statistics.median(ortt),
                        "native_samples_ms": nat,
                        "ort_samples_ms": ortt,
                        "lce_ms": statistics.median(lcet),
                        "lce_samples_ms": lcet,
                        "native_size": bnn_path.stat().st_size,
                        "onnx_size": e.size,
                    }
                )
                r = rows[-1]
                print(
                    f"  {e.arch:9s} {e.algorithm:5s} t={t} isa={isa:8s}: native "
                    f"{r['native_ms']:9.2f} ms   onnxruntime {r['ort_ms']:9.2f} ms"
                    f"   lce {r['lce_ms']:9.2f} ms",
                    flush=True,
                )
    return rows


def _ratio(a: list[float], b: list[float]) -> float:
    """Median over the rounds of a[i] / b[i]: the two were timed in the same round, so a
    machine that switches between a fast and a slow state (as shared VMs do, by up to 2x)
    cancels out -- a ratio of two separate medians can pick one from each state."""
    if len(a) != len(b):
        return math.nan
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def _chw(dims: tuple[int, ...]) -> str:
    return "x".join(str(v) for v in dims[1:])


def _print_layers(profiles: dict[tuple[str, str], tuple]) -> None:
    for (arch, _), (isa, layers, ms, mhz, seq, more, best) in profiles.items():
        total = sum(ms)
        peak = assumed_peak(isa)[0]
        print(
            f"\nper-layer median ms, {arch} bnn, isa={isa}, 1 thread; clock {mhz:.0f} MHz "
            f"(measured), {isa} peak {peak} BOPs/cycle (best: % peak in the layer's "
            "fastest run)" + "".join(f"; at {t} threads: ms and 1-thread ms / it" for t in more)
        )
        print(
            f"{'#':>3s} {'op':14s} {'input':>16s} {'output':>16s} {'ms':>8s} {'%':>5s}"
            f" {'BOPs/cyc':>9s} {'% peak':>7s} {'best':>6s}"
            + "".join(f" {f'ms@{t}':>8s} {'x':>5s}" for t in more)
        )
        by_op: dict[str, float] = {}
        for info, t in zip(layers, ms, strict=False):
            by_op[info.op] = by_op.get(info.op, 0.0) + t
            extra = f" {'':9s} {'':7s} {'':6s}"
            if info.op == "conv2d_bin":
                n, c, _, _ = info.in_shape
                _, oc, oh, ow = info.out_shape
                bops = 2 * n * oc * oh * ow * c * info.kernel[0] * info.kernel[1]
                per_cyc = bops / (t * 1e-3 * mhz * 1e6)
                best_cyc = bops / (best[info.index] * 1e-3 * mhz * 1e6)
                extra = (
                    f" {per_cyc:9.1f} {100 * per_cyc / peak:6.1f}% {100 * best_cyc / peak:5.1f}%"
                )
            for mt in more.values():
                tk = mt[info.index]
                extra += f" {tk:8.3f} {t / tk:5.2f}" if tk > 0 else f" {tk:8.3f} {'':5s}"
            print(
                f"{info.index:3d} {info.op:14s} {_chw(info.in_shape):>16s}"
                f" {_chw(info.out_shape):>16s} {t:8.3f} {100 * t / total:5.1f}"
                f"{extra.rstrip()}"
            )
        print(
            f"  + model-boundary transposes {ms[-1]:.3f} ms; total {total:.2f} ms"
            + "".join(
                f"; at {t} threads {mt[-1]:.3f} ms, total {sum(mt):.2f} ms ({total / sum(mt):.2f}x)"
                for t, mt in more.items()
            )
        )
        print(
            "  by op: "
            + ", ".join(
                f"{op} {t:.2f} ms ({100 * t / total:.0f}%)"
                for op, t in sorted(by_op.items(), key=lambda kv: -kv[1])
            )
        )
        if seq:
            # ops/ns -> ops/cycle: median (best) before and after the profile
            said = [
                f"{when} {s[0] * 1e3 / mhz:.0f} ({s[1] * 1e3 / mhz:.0f})"
                for when, s in zip(("before", "after"), seq, strict=True)
                if s
            ]
            print(
                "  AVX2 kernel sequence alone on L1 data (bench/peak_avx2.c), BOPs/cycle, "
                f"median (best): {', '.join(said)}; on a quiet core "
                f"~{0.8 * assumed_peak('avx2')[0]:.0f} (80% of the assumed AVX2 peak): far "
                "below it, the core was shared and every % peak "
                "above reads low"
            )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--archs", nargs="+", default=list(zoo.ARCHS), choices=zoo.ARCHS)
    ap.add_argument(
        "--layers",
        nargs="+",
        default=["resnet18"],
        help="architectures whose binary model gets a per-layer table ('none')",
    )
    ap.add_argument("--json", type=Path, help="also write all samples to this file")
    ap.add_argument(
        "--no-lce",
        dest="lce",
        action="store_false",
        help="don't time the Larq Compute Engine interpreter on the same models",
    )
    ap.add_argument(
        "--lce-dir",
        type=Path,
        help="take the LCE models from this folder ({arch}_{algorithm}.tflite, "
        "converted on a machine with TensorFlow) instead of converting here",
    )
    ap.add_argument(
        "--isa",
        nargs="+",
        default=available_isas(),
        help="binary-conv kernel sets to time (default: all this CPU supports)",
    )
    ap.add_argument(
        "--layers-threads",
        type=int,
        nargs="+",
        default=[],
        help="also profile per layer at these thread counts (a scaling column each)",
    )
    ap.add_argument(
        "--layers-isa",
        nargs="+",
        help="kernel sets to profile per layer (default: the last of --isa)",
    )
    args = ap.parse_args()
    bad = [i for i in args.isa if i not in available_isas()]
    if bad:
        ap.error(
            f"--isa {' '.join(bad)}: not supported here (available: {' '.join(available_isas())})"
        )

    import onnxruntime as ort

    rows = []
    profiles: dict[tuple[str, str], tuple] = {}
    print(
        f"machine: {cpu_model()} ({platform.machine()}), native {native_version()}, "
        f"onnxruntime {ort.__version__}, runs={args.runs} warmup={args.warmup}",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        entries = zoo.write_zoo(tmpdir, archs=tuple(args.archs))
        for arch in args.archs:
            models = []
            for e in (e for e in entries if e.arch == arch):
                bnn_path = tmpdir / f"{e.path.stem}.bnn"
                converters_api.convert(e.path, "native", bnn_path)
                lce_path: Path | None = tmpdir / f"{e.path.stem}.tflite"
                if args.lce_dir:
                    # converted elsewhere (this machine has no TensorFlow); a model without a
                    # file there gets no LCE column
                    given = args.lce_dir / f"{e.path.stem}.tflite"
                    lce_path = given if given.exists() else None
                elif args.lce:
                    converters_api.convert(e.path, "lce", lce_path, verify=False)
                models.append((e, bnn_path, lce_path))
            x = np.random.default_rng(0).standard_normal(zoo.input_shape(arch)).astype(np.float32)
            rows += _time_arch(models, x, args)
            if arch not in args.layers or "bnn" not in {m[0].algorithm for m in models}:
                continue
            e, bnn_path, _ = next(m for m in models if m[0].algorithm == "bnn")
            for isa in args.layers_isa or args.isa[-1:]:
                with NativeEngine(bnn_path, threads=1, isa=isa) as eng:
                    eng.benchmark(x, args.warmup, 1)
                    # clock and ceiling measured right around the profile: speed drifts
                    x86 = eng.isa in ("avx2", "avx512")
                    seq0 = avx2_sequence_ops_per_ns() if x86 else None
                    c0 = clock_mhz(3)
                    # one run per call: per-layer medians and bests (a shared core's slow
                    # spells show as the gap between the two)
                    runs = [eng.profile(x, 0, 1) for _ in range(args.runs)]
                    prof = [statistics.median(v) for v in zip(*runs, strict=True)]
                    best = [min(v) for v in zip(*runs, strict=True)]
                    mhz = (c0 + clock_mhz(3)) / 2
                    seq = (seq0, avx2_sequence_ops_per_ns()) if seq0 else None
                    more = {}
                    for t in args.layers_threads:
                        with NativeEngine(bnn_path, threads=t, isa=isa) as engt:
                            engt.benchmark(x, args.warmup, 1)
                            more[t] = engt.profile(x, 0, args.runs)
                    profiles[(arch, isa)] = (eng.isa, eng.layers(), prof, mhz, seq, more, best)

    def cell(arch: str, alg: str, t: int, isa: str = "-") -> dict | None:
        return next(
            (
                r
                for r in rows
                if (r["arch"], r["algorithm"], r["threads"], r["isa"]) == (arch, alg, t, isa)
            ),
            None,
        )

    print(
        "\nmedian latency (ms); ratios are medians of per-round ratios (same machine, run "
        "and round)"
    )
    hdr = (
        f"{'arch':9s} {'alg':5s} {'thr':>3s} {'isa':8s} {'native':>9s} {'onnxrt':>9s}"
        f" {'lce':>9s} {'ort/native':>10s} {'lce/native':>10s} {'vs ort fp32':>11s}"
        f" {'speedup':>8s} {'vs portable':>11s}"
        f" {'size MB':>8s}"
    )
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        fp32 = cell(r["arch"], "fp32", r["threads"])
        port = cell(r["arch"], r["algorithm"], r["threads"], "portable")
        nat = r["native_samples_ms"]
        ort_fp32 = f"{_ratio(fp32['ort_samples_ms'], nat):11.2f}" if fp32 else f"{'n/a':>11s}"
        nat_fp32 = f"{_ratio(fp32['native_samples_ms'], nat):8.2f}" if fp32 else f"{'n/a':>8s}"
        vs_port = f"{_ratio(port['native_samples_ms'], nat):11.2f}" if port else f"{'-':>11s}"
        print(
            f"{r['arch']:9s} {r['algorithm']:5s} {r['threads']:3d} {r['isa']:8s}"
            f" {r['native_ms']:9.2f} {r['ort_ms']:9.2f} {r['lce_ms']:9.2f}"
            f" {_ratio(r['ort_samples_ms'], nat):10.2f}"
            f" {_ratio(r['lce_samples_ms'], nat):10.2f}"
            f" {ort_fp32} {nat_fp32} {vs_port} {r['native_size'] / 1e6:8.2f}"
        )
    more = [t for t in args.threads if t > 1]
    if 1 in args.threads and more:
        print(
            "\nthread scaling (native, t=1 / t=k): "
            + " ".join(f"{'k=' + str(t):>7s}" for t in more)
        )
        for r1 in rows:
            if r1["threads"] != 1:
                continue
            cells = []
            for t in more:
                rk = cell(r1["arch"], r1["algorithm"], t, r1["isa"])
                cells.append(
                    f"{_ratio(r1['native_samples_ms'], rk['native_samples_ms']):6.2f}x"
                    if rk
                    else f"{'-':>7s}"
                )
            print(f"  {r1['arch']:9s} {r1['algorithm']:5s} {r1['isa']:8s} " + " ".join(cells))
    if profiles:
        _print_layers(profiles)
    if args.json:
        args.json.write_text(json.dumps({"machine": cpu_model(), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

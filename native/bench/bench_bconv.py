"""Binary ops per cycle of the native binary convolution, per kernel set (ISA).

    python native/bench/bench_bconv.py [--isa portable popcnt avx2] [--threads 1 2]
        [--runs 30] [--repeats 5] [--mhz MHZ]

Times ResNet-18's binary 3x3 convolutions (pad 1, batch 1; the stride-1 layers of each stage
and the stride-2 layers that open stages 2-4) as one-layer .bnn models through the public
engine, per ISA and thread count. The time is the layer alone, from ``bnn_profile`` (the
model-boundary NCHW<->NHWC transposes are excluded): sign packing of the input, the
XOR-popcount kernel and the epilogue (padding correction, scale, bias). Ops counted:

    BOPs = 2 * out_c * OH * OW * in_c * kh * kw

i.e. every (activation bit, weight bit) pair counts as two binary ops, an XNOR and a
popcount-accumulate (the usual BNN convention: one MAC = 2 ops). Tail bits of the last
64-bit word and padded taps the kernel still reads are *not* counted, so the figure is a
lower bound on what the kernel itself achieves.

    BOPs/cycle/core = BOPs / (median seconds * clock Hz * threads)

(median over the repeats, each repeat a median over --runs; the fastest repeat and the best
repeat's ops/cycle are printed too). The clock is measured (bench/machine.py: dependent-add
chain) right before and after every repeat and averaged, not read from /proc/cpuinfo, unless
--mhz is given: on a shared VM the speed drifts by up to 2x within minutes, and a cycle
count taken at another moment would misstate ops/cycle. The peaks assumed
per ISA, and how they are derived, are printed with the table (machine.assumed_peak).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from native import format as F  # noqa: E402
from native.bench.machine import assumed_peak, clock_mhz, cpu_model  # noqa: E402
from native.engine import NativeEngine, available_isas  # noqa: E402

# ResNet-18's binary 3x3 layers (pad 1): (in_c, out_c, input H=W, stride)
LAYERS = [
    (64, 64, 56, 1),
    (64, 128, 56, 2),
    (128, 128, 28, 1),
    (128, 256, 28, 2),
    (256, 256, 14, 1),
    (256, 512, 14, 2),
    (512, 512, 7, 1),
]


def _layer_model(c: int, oc: int, hw: int, stride: int) -> bytes:
    rng = np.random.default_rng(c)
    layer = F.Conv2dBin(
        [0],
        1,
        weight_sign=np.where(rng.random((oc, c, 3, 3)) < 0.5, -1.0, 1.0).astype(np.float32),
        scale=np.ones(oc, np.float32),
        bias=np.zeros(oc, np.float32),
        pads=(1, 1, 1, 1),
        strides=(stride, stride),
    )
    return F.dumps(F.NativeModel((1, c, hw, hw), [layer], n_values=2, output_id=1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--isa", nargs="+", default=available_isas())
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--runs", type=int, default=30, help="timed runs per repeat")
    ap.add_argument("--repeats", type=int, default=5, help="repeats; median of their medians")
    ap.add_argument("--mhz", type=float, help="core clock (default: measured)")
    args = ap.parse_args()
    print(
        f"{cpu_model()}; clock "
        f"{f'{args.mhz:.0f} MHz (--mhz)' if args.mhz else 'measured around every repeat'}; "
        "BOPs = 2*out_c*OH*OW*in_c*kh*kw; time = the layer (packing, kernel, epilogue)"
    )
    for isa in args.isa:
        peak, how = assumed_peak(isa)
        print(f"  peak {isa:8s} {peak:4} BOPs/cycle/core assumed: {how}")
    hdr = (
        f"{'layer':>16s} {'isa':8s} {'thr':>3s} {'median ms':>10s} {'GBOP/s':>8s}"
        f" {'BOPs/cyc/core':>13s} {'% peak':>7s} {'vs portable':>11s} {'best ms':>8s}"
        f" {'best BOPs/cyc':>13s}"
    )
    print(hdr)
    print("-" * len(hdr))
    rng = np.random.default_rng(0)
    for c, oc, hw, stride in LAYERS:
        data = _layer_model(c, oc, hw, stride)
        x = rng.standard_normal((1, c, hw, hw)).astype(np.float32)
        ohw = (hw - 1) // stride + 1
        bops = 2 * oc * ohw * ohw * c * 9
        for t in args.threads:
            base = None
            for isa in args.isa:
                with NativeEngine(data, threads=t, isa=isa) as eng:
                    eng.benchmark(x, 3, 3)
                    reps, cyc = [], []
                    for _ in range(args.repeats):
                        # the clock right before and after each repeat: on a shared or
                        # throttled VM the speed drifts, and ops/cycle should not
                        c0 = args.mhz or clock_mhz(3)
                        ms_rep = eng.profile(x, 0, args.runs)[0]  # entry 0: the conv
                        mhz_rep = (c0 + (args.mhz or clock_mhz(3))) / 2
                        reps.append(ms_rep)
                        cyc.append(bops / (ms_rep * 1e-3 * mhz_rep * 1e6 * t))
                ms = statistics.median(reps)
                base = ms if isa == "portable" else base
                per_cyc = statistics.median(cyc)
                peak = assumed_peak(isa)[0]
                vs = f"{base / ms:11.2f}" if base else f"{'-':>11s}"
                name = f"{c}->{oc}@{hw}x{hw}/{stride}"
                print(
                    f"{name:>16s} {isa:8s} {t:3d} {ms:10.3f} {bops / ms / 1e6:8.1f}"
                    f" {per_cyc:13.1f} {100 * per_cyc / peak:6.1f}% {vs}"
                    f" {min(reps):8.3f} {max(cyc):13.1f}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())

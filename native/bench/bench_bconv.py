"""Binary ops per cycle of the native binary convolution, per kernel set (ISA).

    python native/bench/bench_bconv.py [--isa portable popcnt avx2] [--threads 1 2]
        [--runs 30] [--repeats 5] [--mhz MHZ]

Times ResNet-18's binary 3x3 convolutions (stride 1, pad 1, batch 1) as one-layer .bnn
models through the public engine, per ISA and thread count; prints the median latency and

    BOPs = 2 * out_c * OH * OW * in_c * kh * kw

i.e. every (activation bit, weight bit) pair counts as two binary ops, an XNOR and a
popcount-accumulate (the usual BNN convention: one MAC = 2 ops). Tail bits of the last
64-bit word, padded taps the kernel still reads and the layer's other work (NCHW->NHWC
transpose, sign packing, epilogue, NHWC->NCHW) are *not* counted, so the figure is a lower
bound on what the row kernel itself achieves.

    BOPs/cycle/core = BOPs / (median seconds * clock Hz * threads)

(median of the per-repeat medians; the fastest single run is printed too, a better guide to
the uncontended speed when the machine is shared)

with the clock from /proc/cpuinfo "cpu MHz" (the first core; a VM may report the nominal,
not the boost, clock) unless --mhz is given. Peaks stated (per core, per cycle; assumptions
for a core with 4 vector/integer ALU pipes such as AMD Zen 3, loads assumed hidden by the
register tile): see PEAKS below.
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
from native.engine import NativeEngine, available_isas  # noqa: E402

# name: (BOPs/cycle/core, how derived)
PEAKS = {
    "portable": (
        85,
        "SWAR popcount, which gcc -O3 auto-vectorizes to SSE2: ~12 vector ops per 128 bits "
        "on 4 pipes: ~43 bit pairs/cycle",
    ),
    "popcnt": (171, "xor + popcnt + add = 3 ops per 64-bit word on 4 ALUs: 85 bit pairs/cycle"),
    "avx2": (
        228,
        "per 256 bits: vpxor, 2 vpand, vpsrlw, 2 vpshufb, vpaddb, vpsadbw, "
        "vpaddq = 9 vector ops on 4 pipes: 114 bit pairs/cycle",
    ),
    "avx512": (
        683,
        "per 512 bits: vpxorq + vpopcntq + vpaddq = 3 ops on 2 512-bit pipes: 341 bit pairs/cycle",
    ),
}

# ResNet-18 binary 3x3 layers (stride 1, pad 1): (in_c, out_c, H=W)
LAYERS = [(64, 64, 56), (128, 128, 28), (256, 256, 14), (512, 512, 7)]


def _cpu_mhz() -> float:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("cpu MHz"):
            return float(line.split(":", 1)[1])
    raise SystemExit("no 'cpu MHz' in /proc/cpuinfo; pass --mhz")


def _layer_model(c: int, oc: int, hw: int) -> bytes:
    rng = np.random.default_rng(c)
    layer = F.Conv2dBin(
        [0],
        1,
        weight_sign=np.where(rng.random((oc, c, 3, 3)) < 0.5, -1.0, 1.0).astype(np.float32),
        scale=np.ones(oc, np.float32),
        bias=np.zeros(oc, np.float32),
        pads=(1, 1, 1, 1),
    )
    return F.dumps(F.NativeModel((1, c, hw, hw), [layer], n_values=2, output_id=1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--isa", nargs="+", default=available_isas())
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--runs", type=int, default=30, help="timed runs per repeat")
    ap.add_argument("--repeats", type=int, default=5, help="repeats; median of their medians")
    ap.add_argument("--mhz", type=float, help="core clock (default: /proc/cpuinfo cpu MHz)")
    args = ap.parse_args()
    mhz = args.mhz or _cpu_mhz()
    print(
        f"clock {mhz:.0f} MHz ({'--mhz' if args.mhz else '/proc/cpuinfo cpu MHz'}); "
        "BOPs = 2*out_c*OH*OW*in_c*kh*kw; time = whole layer incl. packing/epilogue"
    )
    for isa in args.isa:
        peak, how = PEAKS.get(isa, (float("nan"), "?"))
        print(f"  peak {isa:8s} {peak:4} BOPs/cycle/core assumed: {how}")
    hdr = (
        f"{'layer':>16s} {'isa':8s} {'thr':>3s} {'median ms':>10s} {'GBOP/s':>8s}"
        f" {'BOPs/cyc/core':>13s} {'% peak':>7s} {'vs portable':>11s}"
    )
    print(hdr)
    print("-" * len(hdr))
    rng = np.random.default_rng(0)
    for c, oc, hw in LAYERS:
        data = _layer_model(c, oc, hw)
        x = rng.standard_normal((1, c, hw, hw)).astype(np.float32)
        bops = 2 * oc * hw * hw * c * 9
        for t in args.threads:
            base = None
            for isa in args.isa:
                with NativeEngine(data, threads=t, isa=isa) as eng:
                    eng.benchmark(x, 3, 3)
                    reps = [eng.benchmark(x, 0, args.runs) for _ in range(args.repeats)]
                ms = statistics.median(statistics.median(r) for r in reps)
                best = min(min(r) for r in reps)
                base = ms if isa == "portable" else base
                per_cyc = bops / (ms * 1e-3 * mhz * 1e6 * t)
                peak = PEAKS.get(isa, (float("nan"),))[0]
                vs = f"{base / ms:11.2f}" if base else f"{'-':>11s}"
                name = f"{c}->{oc}@{hw}x{hw}"
                print(
                    f"{name:>16s} {isa:8s} {t:3d} {ms:10.3f} {bops / ms / 1e6:8.1f}"
                    f" {per_cyc:13.1f} {100 * per_cyc / peak:6.1f}% {vs} {best:8.3f}"
                    f" {bops / (best * 1e-3 * mhz * 1e6 * t):12.1f}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())

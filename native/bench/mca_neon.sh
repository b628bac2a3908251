#!/usr/bin/env bash
# Static throughput of the ARM NEON inner loops with llvm-mca: the AArch64 binary-conv row
# kernel (src/bconv_neon64.c, 8-channel tile) and SGEMM micro-kernels (src/sgemm_neon64.c,
# packed and direct), and the ARMv7 ones (src/bconv_neon32.c, 4-channel tile;
# src/sgemm_neon32.c, VMLA and VFMA flavours, packed and direct). No ARM hardware or
# emulation is involved: every number is llvm-mca's scheduling model of a CPU, not a
# measurement.
#
#   native/bench/mca_neon.sh            the table (VERBOSE=1 also prints each loop)
#   env: LLVM_MCA (default: the newest /usr/lib/llvm-*/bin/llvm-mca), AARCH64_CC, ARMV7_CC,
#        A64_MODELS (default "cortex-a53 cortex-a72 cortex-a76 neoverse-n1"),
#        A32_MODELS (default "cortex-a9 cortex-a72")
#
# How: each kernel file is compiled to assembly with the flags of the shipped cross build
# (cross.mk: -std=c11 -O3; ARMv7 -march=armv7-a -mfloat-abi=hard -mfpu=neon) plus -DBNN_MCA,
# which puts LLVM-MCA-BEGIN/END comments around the inner loops; from a region we cut exactly
# the loop (its label through the branch back to it), so no set-up code is counted, and
# llvm-mca runs it as a steady-state block (1000 iterations).
#
# Peak, per model: llvm-mca on a block of the kernel's work instructions alone, independent
# and without loads or loop control -- 24 FMLA (AArch64) or 12 VFMA / VMLA (ARMv7) on q
# registers for the SGEMMs; 8 (AArch64) or 4 (ARMv7) independent EOR -> CNT -> UADALP
# (VEOR -> VCNT.8 -> VPADAL.U8) chains for the binary loop. So the peak is what the model's
# pipes allow for those instructions (FMA: pipes x 4 lanes per cycle; binary: 128 bit pairs
# per CNT), and % of peak = (work instructions per cycle in the loop) / (the same in the
# peak block). Work: 4 FP32 multiply-adds per FMLA/VFMA/VMLA (q form); 128 binary MACs per
# CNT (one 128-bit chunk of one output channel).
#
# Model notes (LLVM 19): llvm-mca has no Cortex-A72 or Cortex-A76 model of its own; it
# schedules both with the Cortex-A57 model (the scheduling resources are printed as the
# model's unit-name prefix). Neoverse N1 (the A76 pipeline) has its own. For 32-bit ARM
# there is no Cortex-A7 or Cortex-A53 model at all: the ARMv7 kernels are shown on
# Cortex-A9 (an ARMv7 core, itinerary model) and on the A57 model in AArch32 state (what an
# A72 running a 32-bit OS would be).
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
CC64=${AARCH64_CC:-aarch64-linux-gnu-gcc}
CC32=${ARMV7_CC:-arm-linux-gnueabihf-gcc}
MCA=${LLVM_MCA:-$( (ls /usr/lib/llvm-*/bin/llvm-mca 2>/dev/null | sort -V | tail -1) || true)}
MCA=${MCA:-$(command -v llvm-mca || true)}
MCA=${MCA:-llvm-mca}
read -r -a M64 <<< "${A64_MODELS:-cortex-a53 cortex-a72 cortex-a76 neoverse-n1}"
read -r -a M32 <<< "${A32_MODELS:-cortex-a9 cortex-a72}"
for t in "$CC64" "$CC32" "$MCA"; do
    command -v "$t" >/dev/null 2>&1 || {
        echo "mca_neon.sh: $t not found (make -C native cross-deps mca-deps)" >&2
        exit 2
    }
done
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

CF=(-std=c11 -O3 -DBNN_MCA -I"$HERE/include" -I"$HERE/src" -S)
"$CC64" "${CF[@]}" "$HERE/src/bconv_neon64.c" -o "$TMP/bconv64.s"
"$CC64" "${CF[@]}" "$HERE/src/sgemm_neon64.c" -o "$TMP/sgemm64.s"
A32=(-march=armv7-a -mfloat-abi=hard -mfpu=neon)
"$CC32" "${CF[@]}" "${A32[@]}" "$HERE/src/bconv_neon32.c" -o "$TMP/bconv32.s"
"$CC32" "${CF[@]}" "${A32[@]}" "$HERE/src/sgemm_neon32.c" -o "$TMP/sgemm32.s"

# cut FILE REGION: the loop of the first LLVM-MCA region named REGION (its name ends the
# marker line), from its first label through the conditional branch back to that label.
cut_loop() {
    awk -v want="$2" '
        /LLVM-MCA-BEGIN/ { inr = ($NF == want && !seen); if (inr) seen = 1; next }
        /LLVM-MCA-END/   { inr = 0 }
        inr && /^\.L[0-9A-Za-z_]+:/ && !lab { lab = substr($1, 1, length($1) - 1); on = 1; next }
        inr && on {
            if ($0 ~ /^[ \t]*[#@]|^\/\/|^[ \t]*\.(syntax|thumb|arm|p2align|align)/) next
            print
            if ($NF == lab) { on = 0; done = 1 }
        }
        END { if (!done) exit 1 }
    ' "$1"
}

# Peak blocks (see the header).
{
    for i in $(seq 0 23); do echo "fmla v$i.4s, v24.4s, v25.s[$((i % 4))]"; done
} > "$TMP/peak_fmla64.s"
# (grouped by instruction, so that an in-order model is not held up by each chain's latency)
{
    for i in $(seq 0 7); do echo "eor v$((8 + i)).16b, v0.16b, v$((16 + i)).16b"; done
    for i in $(seq 0 7); do echo "cnt v$((8 + i)).16b, v$((8 + i)).16b"; done
    for i in $(seq 0 7); do echo "uadalp v$((24 + i)).8h, v$((8 + i)).16b"; done
} > "$TMP/peak_bin64.s"
for op in vfma vmla; do
    for i in $(seq 0 11); do echo "$op.f32 q$i, q12, q13"; done > "$TMP/peak_${op}32.s"
done
{
    for i in 0 1 2 3; do echo "veor q$((4 + i)), q0, q$((8 + i))"; done
    for i in 0 1 2 3; do echo "vcnt.8 q$((4 + i)), q$((4 + i))"; done
    for i in 0 1 2 3; do echo "vpadal.u8 q$((12 + i)), q$((4 + i))"; done
} > "$TMP/peak_bin32.s"

# mca TRIPLE CPU FILE -> "cycles/iteration unit-prefix" (steady state over 1000 iterations)
mca() {
    local attr=()
    [ "$1" = aarch64 ] || attr=(-mattr=+neon,+vfp4)
    "$MCA" -mtriple="$1" -mcpu="$2" "${attr[@]}" -iterations=1000 "$3" > "$TMP/mca.txt" 2>&1 || {
        echo "mca_neon.sh: llvm-mca failed on $3 for $2:" >&2
        cat "$TMP/mca.txt" >&2
        exit 1
    }
    awk '/^Iterations:/ { it = $2 } /^Total Cycles:/ { cyc = $3 }
         /^\[[0-9.]+\] *- / && !unit { unit = $3; sub(/Unit.*/, "", unit) }
         END { printf "%.3f %s\n", cyc / it, unit }' "$TMP/mca.txt"
}

echo "llvm-mca: $("$MCA" --version | grep -i 'llvm version' | sed 's/^ *//')"
echo "compilers: $("$CC64" --version | head -1); $("$CC32" --version | head -1)"
printf '\n%-28s %-12s %-6s %8s %6s %10s %10s %7s %12s\n' kernel model sched cyc/it "ops/it" \
    "ops/cyc" "peak/cyc" "%peak" "work/cycle"
# kernel  asm-file  region  triple  work-op regex  work per op  unit  peak block
KERNELS=(
    "bconv_neon64_8ch|bconv64|bconv_neon64|aarch64|cnt|128|bitMAC|peak_bin64"
    "sgemm_neon64_packed_6x16|sgemm64|sgemm_neon64_packed|aarch64|fmla|4|FMA|peak_fmla64"
    "sgemm_neon64_direct_6x16|sgemm64|sgemm_neon64_direct|aarch64|fmla|4|FMA|peak_fmla64"
    "bconv_neon32_4ch|bconv32|bconv_neon32|armv7|vcnt|128|bitMAC|peak_bin32"
    "sgemm_neon32_vmla_packed|sgemm32|sgemm_neon32_packed|armv7|vmla|4|FMA|peak_vmla32"
    "sgemm_neon32_vmla_direct|sgemm32|sgemm_neon32_direct|armv7|vmla|4|FMA|peak_vmla32"
    "sgemm_neon32_vfma_packed|sgemm32|sgemm_neon32fma_packed|armv7|vfma|4|FMA|peak_vfma32"
    "sgemm_neon32_vfma_direct|sgemm32|sgemm_neon32fma_direct|armv7|vfma|4|FMA|peak_vfma32"
)
for k in "${KERNELS[@]}"; do
    IFS='|' read -r name asm region triple op per unit peak <<< "$k"
    cut_loop "$TMP/$asm.s" "$region" > "$TMP/$name.s" || {
        echo "mca_neon.sh: could not cut the loop of region $region" >&2
        exit 1
    }
    ops=$(grep -cE "^[[:space:]]*$op([.[:space:]]|$)" "$TMP/$name.s" || true)
    peak_ops=$(grep -cE "^[[:space:]]*$op([.[:space:]]|$)" "$TMP/$peak.s" || true)
    if [ "${VERBOSE:-0}" = 1 ]; then
        echo "== $name: $(wc -l < "$TMP/$name.s") instructions, $ops $op"
        cat "$TMP/$name.s"
    fi
    if [ "$triple" = aarch64 ]; then models=("${M64[@]}"); tr=aarch64
    else models=("${M32[@]}"); tr=armv7-linux-gnueabihf; fi
    for mc in "${models[@]}"; do
        read -r cyc sched < <(mca "$tr" "$mc" "$TMP/$name.s")
        read -r pcyc _ < <(mca "$tr" "$mc" "$TMP/$peak.s")
        awk -v n="$name" -v mc="$mc" -v s="$sched" -v cyc="$cyc" -v ops="$ops" -v pc="$pcyc" \
            -v po="$peak_ops" -v per="$per" -v unit="$unit" 'BEGIN {
            r = ops / cyc; p = po / pc
            printf "%-28s %-12s %-6s %8.2f %6d %10.3f %10.3f %6.1f%% %7.1f %s\n",
                   n, mc, s, cyc, ops, r, p, 100 * r / p, r * per, unit
        }'
    done
done
echo
echo "cyc/it: llvm-mca cycles per loop iteration; ops/it: work instructions in it (FMLA/VFMA/VMLA"
echo "q-form, or CNT); ops/cyc and peak/cyc: those per cycle in the loop and in the peak block;"
echo "work/cycle: FP32 multiply-adds (FMA) or binary MACs (bitMAC) per cycle. sched: the"
echo "scheduling model llvm-mca used (its resource-name prefix). Static model numbers, not"
echo "measurements."

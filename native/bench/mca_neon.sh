#!/usr/bin/env bash
# Static throughput of the AArch64 NEON binary-conv inner loop (src/bconv_neon64.c) with
# llvm-mca. No ARM hardware or emulation involved: the numbers are llvm-mca's scheduling
# model of the CPU, not measurements.
#
#   native/bench/mca_neon.sh [MCPU [MCA_CPU...]]
#       MCPU: gcc -mcpu for the code (default cortex-a76);
#       MCA_CPU: llvm-mca -mcpu models to analyse it with (default: cortex-a76 neoverse-n1).
# Note: llvm-mca (LLVM 14 and 19 alike) schedules -mcpu=cortex-a76 with the Cortex-A57
# model (no A76 model exists); neoverse-n1, the server core built on the A76 pipeline, has
# a real model in LLVM >= 17, so both are printed.
#
# How: compile bconv_neon64.c to assembly with -O3 -mcpu=$MCPU and -DBNN_MCA, which wraps
# the chunk loop of each register tile in "# LLVM-MCA-BEGIN/END" inline-asm comments. The
# first region is the 8-output-channel tile (the one every layer with >= 8 channels per
# task runs); from it we cut exactly the loop (from its label to the backward branch), so
# no preheader code is counted, and feed it to llvm-mca as one steady-state block.
# One iteration = one 128-bit input chunk XOR-popcounted against 8 weight chunks, i.e.
# 8 * 128 = 1024 binary MACs (bit products accumulated). Reported:
#   cycles/iteration = llvm-mca "Total Cycles" / "Iterations" (steady state)
#   binary MACs/cycle = 1024 / cycles-per-iteration; binary ops/cycle = 2 * that (XNOR +
#   popcount-accumulate per bit, the usual convention for BNN "ops").
set -euo pipefail
MCPU=${1:-cortex-a76}
shift || true
MCA_CPUS=("$@")
[ ${#MCA_CPUS[@]} -gt 0 ] || MCA_CPUS=(cortex-a76 neoverse-n1)
CC=${AARCH64_CC:-aarch64-linux-gnu-gcc}
# Newest installed llvm-mca: LLVM 14 has no Cortex-A76 model (it uses Cortex-A57's);
# LLVM >= 17 models cortex-a76 with its Neoverse N1 model (`make -C native mca` installs 19).
MCA=${LLVM_MCA:-$( (ls /usr/lib/llvm-*/bin/llvm-mca 2>/dev/null | sort -V | tail -1) || true)}
MCA=${MCA:-$(command -v llvm-mca || true)}
MCA=${MCA:-llvm-mca}
HERE=$(cd "$(dirname "$0")/.." && pwd)
for t in "$CC" "$MCA"; do
    command -v "$t" >/dev/null 2>&1 || { echo "mca_neon.sh: $t not found (make -C native cross-deps; apt-get install llvm)" >&2; exit 2; }
done
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
"$CC" -std=c11 -O3 -mcpu="$MCPU" -DBNN_MCA -I"$HERE/include" -I"$HERE/src" -S \
    "$HERE/src/bconv_neon64.c" -o "$TMP/k.s"
# First marked region -> its loop: label line through the conditional branch back to it.
awk '
    /LLVM-MCA-BEGIN/ { n++; inr = (n == 1); next }
    /LLVM-MCA-END/   { inr = 0 }
    inr && /^\.L[0-9A-Za-z_]+:/ && !lab { lab = substr($1, 1, length($1) - 1); on = 1; next }
    inr && on { if ($0 ~ /^#|^\/\//) next; print; if ($NF == lab) { on = 0; done = 1 } }
    END { if (!done) exit 1 }
' "$TMP/k.s" > "$TMP/loop.s" || { echo "mca_neon.sh: could not cut the loop" >&2; exit 1; }
{ echo "# LLVM-MCA-BEGIN bconv_neon64_8ch"; cat "$TMP/loop.s"; echo "# LLVM-MCA-END"; } > "$TMP/region.s"
echo "== inner loop (8 output channels x 128 bits per iteration), gcc -O3 -mcpu=$MCPU =="
cat "$TMP/loop.s"
for MC in "${MCA_CPUS[@]}"; do
"$MCA" -mtriple=aarch64 -mcpu="$MC" -iterations=1000 "$TMP/region.s" > "$TMP/mca.txt"
echo
echo "== $("$MCA" --version | grep -i 'llvm version' | sed 's/^ *//'): llvm-mca -mtriple=aarch64 -mcpu=$MC =="
sed -n '/^Iterations:/,/^Block RThroughput:/p' "$TMP/mca.txt"
echo "scheduling-model resources (per iteration):"
sed -n '/^Resources:/,/^$/p;/^Resource pressure per iteration:/,+2p' "$TMP/mca.txt"
awk -v bits=1024 -v mc="$MC" '
    /^Iterations:/ { it = $2 } /^Total Cycles:/ { cyc = $3 } /^Block RThroughput:/ { rt = $3 }
    /^Instructions:/ { ins = $2 }
    END {
        cpi = cyc / it
        printf "[%s] cycles/iteration (steady state): %.3f   (Block RThroughput: %s)\n", mc, cpi, rt
        printf "[%s] instructions/iteration: %.0f\n", mc, ins / it
        printf "[%s] binary MACs/cycle = %d bits / %.3f cycles = %.1f\n", mc, bits, cpi, bits / cpi
        printf "[%s] binary ops/cycle (2 per MAC) = %.1f\n", mc, 2 * bits / cpi
    }' "$TMP/mca.txt"
done

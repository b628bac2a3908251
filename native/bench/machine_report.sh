#!/usr/bin/env bash
# Build, check and benchmark the native engine on the machine this runs on, in one go, for a
# machine lent for a few minutes (a many-core server, an AVX-512 CPU this project's CI lacks):
#
#   native/bench/machine_report.sh OUTDIR [bench_zoo.py arguments...]
#
# 1. the machine (lscpu, compiler, Python), 2. `make` (library, CLI, benchmark tools),
# 3. the C kernel tests under ASan/UBSan (every ISA the CPU supports against the portable
# reference), 4. the Python ISA/engine/fusion tests (pytest, without the service's conftest,
# so only numpy, onnx, onnxruntime and pytest are needed), 5. bench/bench_zoo.py with the
# given arguments. Every step's full log goes to OUTDIR; the summary is printed last.
# Needs gcc, make and python3; LCE columns need its interpreter module importable (see
# bench_zoo.py --lce-dir for a machine without TensorFlow).
set -u
OUT=${1:?usage: machine_report.sh OUTDIR [bench_zoo.py arguments...]}
shift
mkdir -p "$OUT"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT" || exit 1
PY=${PYTHON:-python3}
JOBS=$(nproc)
status=()

step() { # name, timeout seconds, command...
    local name=$1 limit=$2 t0=$SECONDS rc
    shift 2
    timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
    rc=$?
    status+=("$(printf '%-8s rc=%-3s %4ss' "$name" "$rc" $((SECONDS - t0)))")
    return $rc
}

{
    lscpu
    echo "nproc: $JOBS"
    grep -o -w -E 'avx2|avx512f|avx512bw|avx512vpopcntdq|avx512_vpopcntdq' /proc/cpuinfo \
        | sort | uniq -c
    ${CC:-gcc} --version | head -1
    "$PY" -c 'import sys, numpy, onnx, onnxruntime as o; print(sys.version.split()[0],
numpy.__version__, onnx.__version__, o.__version__)'
} >"$OUT/machine.log" 2>&1

step build 300 make -C native -j"$JOBS" all tools
step ctest 300 make -C native -j"$JOBS" test
step pytest 300 env PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$PY" -m pytest -q \
    --noconftest -p no:cacheprovider tests/test_native_isa.py tests/test_native_engine.py \
    tests/test_native_fusion.py
step bench 1200 env PYTHONUNBUFFERED=1 "$PY" native/bench/bench_zoo.py --json "$OUT/zoo.json" "$@"

echo "== machine"; grep -E '^(Model name|Thread|Core|Socket|CPU\(s\)|L1d|L2|L3|NUMA node\(s\))' \
    "$OUT/machine.log"; tail -n 4 "$OUT/machine.log"
echo "== ctest"; grep -E '^\[[a-z0-9]+\] (ok|FAILED|NOT RUN)|checks' "$OUT/ctest.log"
grep -m 5 -E 'FAIL|ERROR|runtime error' "$OUT/ctest.log"
echo "== pytest"; tail -n 3 "$OUT/pytest.log"
echo "== bench"
if grep -q '^median latency' "$OUT/bench.log"; then
    sed -n '/^median latency/,$p' "$OUT/bench.log"
else
    tail -n 20 "$OUT/bench.log" # it failed: the traceback
fi
echo "== steps"; printf '%s\n' "${status[@]}"

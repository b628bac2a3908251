#!/usr/bin/env bash
# Create .venv-torch: a separate venv with PyTorch for exporting test models to ONNX.
# Separate because the main venv pins onnx 1.17 (TensorFlow 2.16 for LCE needs ml-dtypes 0.3),
# while the dynamo exporter needs onnxscript/onnx_ir, which need a newer onnx.
# Idempotent: does nothing when the venv already has the pinned set installed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV=.venv-torch  # tests/test_torch_exports.py looks for it here
# torch is pinned to the CPU wheel on this machine's disk (an unpinned torch would pull a
# multi-GB CUDA build); the exporter stack is pinned too, since its graph optimizer decides
# what the exported graphs look like
REQS=(torch==2.13.0 onnxscript==0.7.2 onnx-ir==1.1.0 onnx==1.23.2 numpy)
STAMP="$VENV/.bnnbench-installed"
WANT="${REQS[*]}"

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]] && "$VENV/bin/python" -c "import torch, onnxscript, onnx" 2>/dev/null; then
  exit 0
fi
if [[ ! -x "$VENV/bin/python" ]]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/pip" install -q "${REQS[@]}"
"$VENV/bin/python" -c "import torch, onnxscript, onnx; print('torch', torch.__version__, 'onnx', onnx.__version__, 'onnxscript', onnxscript.__version__)"
echo "$WANT" > "$STAMP"

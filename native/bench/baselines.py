"""The baseline the benchmarks compare the native engine with, configured one way for all:
onnxruntime on the CPU, ``threads`` intra-op threads, sequential execution, all graph
optimizations (what a user of onnxruntime gets at its best on one inference at a time)."""

from __future__ import annotations

from pathlib import Path


def ort_session(path: Path, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

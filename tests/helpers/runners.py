"""What the runner tests expect of the tools they drive."""

from __future__ import annotations


def lce_sample_flags(threads: int, warmup: int) -> set[str]:
    """The flags of one ``lce_benchmark_model`` process (one process per sample, XNNPACK off),
    as its stand-in logs them."""
    return {
        f"--num_threads={threads}",
        f"--warmup_runs={warmup}",
        "--warmup_min_secs=0",
        "--num_runs=1",
        "--min_secs=0",
        "--use_xnnpack=false",
    }

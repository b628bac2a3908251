"""The ``lce`` and ``tflite`` runners: real LCE interpreter and tflite-runtime on converted
models; the ``lce_benchmark_model`` mode with a stand-in executable that replays a real
recorded tool output (the ARM binaries do not run here)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, make_tiny_onnx
from helpers.runners import lce_sample_flags

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from agent.runners.base import Runner, RunnerError, RunPlan  # noqa: E402
from agent.runners.lce import LceRunner  # noqa: E402
from agent.runners.tflite import TFLiteRunner  # noqa: E402

# the models are converted with LCE's converter: TensorFlow, seconds per worker
pytestmark = pytest.mark.slow

DATA = Path(__file__).parent / "data" / "benchmark_outputs"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from converters.backends.lce import convert_lce
    from converters.frontend import load_ir

    d = tmp_path_factory.mktemp("lce_runner")
    out = {}
    for algo in ("bnn", "fp32"):
        graph = load_ir(make_tiny_onnx(d / f"tiny_{algo}.onnx", algo))
        out[algo] = d / f"tiny_{algo}.tflite"
        convert_lce(graph, out[algo], {})
    return out


def test_runners_follow_the_protocol() -> None:
    assert isinstance(LceRunner(), Runner) and isinstance(TFLiteRunner(), Runner)
    assert LceRunner.name == "lce" and TFLiteRunner.name == "tflite"


def test_python_mode_produces_runs_samples(models: dict[str, Path]) -> None:
    r = LceRunner(mode="python")
    assert r.available() and r.resolved_mode() == "python"
    out = r.benchmark(models["bnn"], RunPlan(threads=1, warmup=2, runs=5))
    assert len(out.samples_ms) == 5 and all(s > 0 for s in out.samples_ms)
    assert out.runtime_version == "larq-compute-engine 0.16.0 (python interpreter)"
    assert out.extra["lce_bconv2d_ops"] == 2 and out.extra["output_finite"]
    assert out.extra["input_shape"] == [1, 8, 8, 3]  # NHWC
    two = r.benchmark(models["bnn"], RunPlan(threads=2, warmup=0, runs=1))
    assert len(two.samples_ms) == 1


def test_python_mode_does_not_import_tensorflow(models: dict[str, Path]) -> None:
    code = (
        "import json, sys\n"
        "from agent.runners import RunPlan\n"
        "from agent.runners.lce import LceRunner\n"
        "r = LceRunner(mode='python')\n"
        f"out = r.benchmark({str(models['bnn'])!r}, RunPlan(1, 1, 3))\n"
        "print(json.dumps([len(out.samples_ms), 'tensorflow' in sys.modules]))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
        check=True,
    )
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [3, False]


def test_invalid_jobs_are_refused(models: dict[str, Path], tmp_path: Path) -> None:
    r = LceRunner(mode="python")
    with pytest.raises(RunnerError) as exc:
        r.benchmark(models["bnn"], RunPlan(threads=0, warmup=0, runs=1))
    assert not exc.value.retryable
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"not a model")
    with pytest.raises(RunnerError, match="cannot load the model") as exc:
        r.benchmark(junk, RunPlan(threads=1, warmup=0, runs=1))
    assert not exc.value.retryable


def test_availability_is_reported_without_running_anything(tmp_path: Path) -> None:
    r = LceRunner(mode="binary", binary=tmp_path / "missing")
    assert not r.available() and "BNNBENCH_LCE_BENCHMARK_MODEL" in r.unavailable_reason
    with pytest.raises(ValueError, match="mode"):
        LceRunner(mode="fast")


def _stand_in(tmp_path: Path, recorded: str, exit_code: int = 0) -> tuple[Path, Path]:
    """An executable that logs its arguments and prints a real recorded tool output."""
    log = tmp_path / "args.log"
    script = tmp_path / "lce_benchmark_model"
    script.write_text(
        f'#!/bin/sh\necho "$@" >> "{log}"\ncat "{DATA / recorded}"\nexit {exit_code}\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script, log


def test_binary_mode_one_process_per_sample(models: dict[str, Path], tmp_path: Path) -> None:
    script, log = _stand_in(tmp_path, "tflite_benchmark_model_mi11_yolov5s_fp32_cpu.txt")
    r = LceRunner(mode="binary", binary=script)
    assert r.available() and r.resolved_mode() == "binary"
    assert r.version().startswith("lce_benchmark_model lce_benchmark_model sha256:")
    out = r.benchmark(models["bnn"], RunPlan(threads=2, warmup=3, runs=4))
    assert out.samples_ms == pytest.approx([249.684] * 4)  # its "Inference (avg)"
    calls = log.read_text().splitlines()
    assert len(calls) == 4
    for call in calls:
        expected = {f"--graph={models['bnn']}", *lce_sample_flags(threads=2, warmup=3)}
        assert expected <= set(call.split())
    assert out.extra["mode"] == "binary"
    assert out.extra["first_inference_ms_median"] == pytest.approx(360.262)


def test_binary_mode_tool_failure(models: dict[str, Path], tmp_path: Path) -> None:
    script, _ = _stand_in(tmp_path, "tflite_benchmark_model_mi11_nnapi_failed.txt", 1)
    with pytest.raises(RunnerError, match="Benchmarking failed") as exc:
        LceRunner(mode="binary", binary=script).benchmark(models["bnn"], RunPlan(1, 1, 2))
    assert not exc.value.retryable


def test_tflite_runner(models: dict[str, Path]) -> None:
    r = TFLiteRunner()
    assert r.available() and r.version() == "tflite-runtime 2.14.0"
    out = r.benchmark(models["fp32"], RunPlan(threads=1, warmup=1, runs=3))
    assert len(out.samples_ms) == 3 and all(s > 0 for s in out.samples_ms)
    assert out.extra["output_shape"] == [1, 10] and out.extra["output_finite"]
    plain = TFLiteRunner(use_xnnpack=False).benchmark(models["fp32"], RunPlan(2, 0, 2))
    assert plain.extra["default_delegates"] == "none" and len(plain.samples_ms) == 2
    with pytest.raises(RunnerError, match="'lce' runner") as exc:
        r.benchmark(models["bnn"], RunPlan(threads=1, warmup=0, runs=1))
    assert not exc.value.retryable


def test_tflite_runner_on_a_board_with_python(models: dict[str, Path], tmp_path: Path) -> None:
    """Through a transport the standalone tflite_bench script and the model are pushed into
    the device's cache and run by the board's python3 with tflite-runtime; its JSON is read."""
    import sys

    from agent.transports.local import LocalTransport
    from bnnbench.schemas import MeasurementProtocol

    board = LocalTransport(tmp_path / "board")
    r = TFLiteRunner(transport=board, python=sys.executable)
    assert r.available() and r.version().startswith("tflite-runtime 2.14.0")
    p = MeasurementProtocol(min_time_ms=5.0, max_runs=500)
    out = r.benchmark(models["fp32"], RunPlan(threads=2, warmup=1, runs=3, protocol=p))
    n = len(out.samples_ms)
    assert n >= 3 and (sum(out.samples_ms) >= 5.0 or n == 500)
    assert out.extra["output_shape"] == [1, 10] and out.extra["warmup_runs"] == 1
    assert [f.suffix for f in (tmp_path / "board" / "artifacts").iterdir()] == [".tflite"]
    assert len(list((tmp_path / "board" / "bin").glob("tflite_bench-*.py"))) == 1
    with pytest.raises(RunnerError, match="'lce' runner") as exc:
        r.benchmark(models["bnn"], RunPlan(threads=1, warmup=0, runs=1))
    assert not exc.value.retryable
    missing = TFLiteRunner(transport=board, python="/nonexistent/python3")
    assert not missing.available() and "no tflite-runtime" in (missing.unavailable_reason or "")

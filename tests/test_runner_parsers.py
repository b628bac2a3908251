"""Parsers of external benchmark tools' output, on real recorded outputs (tests/data/
benchmark_outputs/SOURCES.md says where each comes from)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.runners.benchmark_output import (
    BenchmarkOutputError,
    parse_benchmark_model,
    parse_google_benchmark,
    parse_google_benchmark_json,
)

DATA = Path(__file__).parent / "data" / "benchmark_outputs"


def _read(name: str) -> str:
    return (DATA / name).read_text()


def test_every_recorded_file_has_a_source() -> None:
    sources = (DATA / "SOURCES.md").read_text()
    files = [p.name for p in DATA.iterdir() if p.name != "SOURCES.md"]
    assert files
    for name in files:
        assert f"`{name}`" in sources, name


# ----------------------------------------------------------------------------- benchmark_model


def test_scientific_notation_and_op_profiling_output() -> None:
    out = parse_benchmark_model(_read("tflite_benchmark_model_riscv_qemu_op_profiling.txt"))
    # "Inference (avg): 2.95034e+06" microseconds
    assert out.inference_avg_us == pytest.approx(2.95034e6)
    assert out.inference_avg_ms == pytest.approx(2950.34)
    assert out.init_us == 17187 and out.first_inference_us == 3512391
    assert out.warmup_avg_us == pytest.approx(3.51239e6)
    # the timed-runs line, not the op-profiling "Timings (microseconds): count=50 …" line
    assert out.inference is not None and out.inference.count == 50
    assert out.inference.values["avg"] == pytest.approx(2.95034e6)
    assert out.inference.values["min"] == 2727568 and out.inference.values["std"] == 109798
    # the one-run warm-up line has only count and curr
    assert out.warmup is not None and out.warmup.count == 1
    assert out.warmup.avg_us == 3512391
    assert out.model_size_mb == pytest.approx(16.9008)
    assert out.memory_kind == "delta" and out.memory_mb == {"init": 4.21094, "overall": 46.0859}


def test_android_output_fragment() -> None:
    out = parse_benchmark_model(_read("tflite_benchmark_model_mi11_yolov5s_fp32_cpu.txt"))
    assert out.inference_avg_ms == pytest.approx(249.684)
    assert out.warmup_avg_us == 304586 and out.first_inference_us == 360262
    assert out.inference is not None and out.inference.count == 50
    assert out.warmup is None  # only the timed-runs line was pasted
    assert out.memory_kind == "peak" and out.memory_mb["overall"] == pytest.approx(138.809)


def test_2018_summary_format() -> None:
    out = parse_benchmark_model(_read("tflite_benchmark_model_2018_old_summary.txt"))
    # "Average inference timings in us: Warmup: 76605.9, Init: 9933, no stats: 66767.6"
    assert out.inference_avg_us == pytest.approx(66767.6)
    assert out.warmup_avg_us == pytest.approx(76605.9)
    assert out.init_us == 9933
    assert out.inference is not None and out.inference.count == 15
    assert out.warmup is not None and out.warmup.count == 7
    assert out.session_init_ms == pytest.approx(9.933)


def test_failed_run_is_an_error_quoting_the_tool() -> None:
    with pytest.raises(BenchmarkOutputError, match="Benchmarking failed"):
        parse_benchmark_model(_read("tflite_benchmark_model_mi11_nnapi_failed.txt"))


def test_output_of_another_tool_is_refused() -> None:
    with pytest.raises(BenchmarkOutputError):
        parse_benchmark_model(_read("dabnn_benchmark_pixel1_console.txt"))


# ----------------------------------------------------------------------------- google-benchmark


def test_dabnn_console_output() -> None:
    out = parse_google_benchmark(_read("dabnn_benchmark_pixel1_console.txt"))
    assert out.format == "console"
    assert len(out.runs) == 8
    bireal = out.iterations_of("dabnn_bireal18_imagenet")
    assert len(bireal) == 1
    assert bireal[0].real_time_ms == pytest.approx(61.920154)  # "61920154 ns"
    assert bireal[0].cpu_time_ms == pytest.approx(61.339185)
    assert bireal[0].iterations == 10
    s2 = out.iterations_of("dabnn_3x3_256_s2")[0]
    assert s2.real_time_ms == pytest.approx(0.268310) and s2.iterations == 2618


def test_json_nanoseconds() -> None:
    out = parse_google_benchmark(_read("gbench_user_guide_example.json"))
    assert out.format == "json"
    assert out.context["num_cpus"] == 40
    assert [r.name for r in out.runs] == [
        "BM_SetInsert/1024/1",
        "BM_SetInsert/1024/8",
        "BM_SetInsert/1024/10",
    ]
    assert out.runs[0].real_time_ms == pytest.approx(29275e-6)
    assert out.runs[0].iterations == 94877
    assert len(out.iterations_of("BM_SetInsert")) == 3


def test_json_time_unit_is_honoured() -> None:
    out = parse_google_benchmark_json(_read("gbench_compare_input_test2_run.json"))
    by_name = {r.name: r for r in out.runs}
    assert by_name["BM_Hi"].time_unit == "ms"
    assert by_name["BM_Hi"].real_time_ms == 42 and by_name["BM_Hi"].cpu_time_ms == 24
    assert by_name["BM_Zero/4"].real_time_ms == pytest.approx(40e-6)  # 40 ns
    assert [r.name for r in out.iterations_of("BM_Zero")] == ["BM_Zero", "BM_Zero/4"]


def test_json_behind_other_stdout_lines() -> None:
    # the recorded JSON as a run prints it to stdout after the program's own lines
    text = "loading model.dab\nwarning: CPU scaling is enabled\n" + _read(
        "gbench_user_guide_example.json"
    )
    assert len(parse_google_benchmark(text).runs) == 3


def test_json_unknown_unit_is_an_error() -> None:
    text = _read("gbench_user_guide_example.json").replace(
        '"time_unit": "ns"', '"time_unit": "fortnights"', 1
    )
    run = parse_google_benchmark_json(text).runs[0]
    with pytest.raises(BenchmarkOutputError, match="fortnights"):
        _ = run.real_time_ms


def test_google_benchmark_parser_refuses_benchmark_model_output() -> None:
    with pytest.raises(BenchmarkOutputError):
        parse_google_benchmark(_read("tflite_benchmark_model_mi11_yolov5s_fp32_cpu.txt"))

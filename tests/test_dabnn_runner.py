"""daBNN runner: google-benchmark JSON parsing on real recorded output of daBNN's
``benchmark_single_model`` (tests/data/dabnn/README.md), and the runner's command line and
error handling through a replay stub (a script that prints recorded output; it stands for
the CLI contract only, not for daBNN)."""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import pytest

from agent.runners.base import Runner, RunnerError, RunPlan
from agent.runners.benchmark_output import BenchmarkOutputError, parse_google_benchmark_json
from agent.runners.dabnn import ENV_BINARY, DabnnRunner

DATA = Path(__file__).parent / "data" / "dabnn"
OLD = DATA / "benchmark_single_model_gbench_f090141.json"  # the google-benchmark daBNN pins
NEW = DATA / "benchmark_single_model_gbench_v1.9.5.json"


def test_parse_pinned_google_benchmark_output() -> None:
    doc = json.loads(OLD.read_text())
    iters = [b for b in doc["benchmarks"] if b["run_type"] == "iteration"]
    parsed = parse_google_benchmark_json(OLD.read_text())
    runs = parsed.iterations_of("single_model")
    assert len(runs) == len(iters) == 3
    for r, b in zip(runs, iters, strict=True):
        assert r.real_time_ms == pytest.approx(b["real_time"] / 1e6)  # ns -> ms
        assert r.cpu_time_ms == pytest.approx(b["cpu_time"] / 1e6)
        assert r.iterations == b["iterations"]
    assert parsed.context["library_build_type"] == "release"


def test_parse_newer_google_benchmark_output_skips_aggregates() -> None:
    runs = parse_google_benchmark_json(NEW.read_text()).iterations_of("single_model")
    doc = json.loads(NEW.read_text())
    assert [r.repetition_index for r in runs] == [0, 1, 2]
    means = [b for b in doc["benchmarks"] if b.get("aggregate_name") == "mean"]
    got = sum(r.real_time_ms for r in runs) / 3
    assert got == pytest.approx(means[0]["real_time"] / 1e6)


def _iterations(text: str) -> list:
    """Per-repetition runs, as the runner takes them: aggregates dropped."""
    return [r for r in parse_google_benchmark_json(text).runs if r.run_type != "aggregate"]


def test_parse_units_noise_and_failures() -> None:
    doc = json.loads(OLD.read_text())
    for b in doc["benchmarks"]:
        b["time_unit"] = "us"
    text = "I1125 glog line before the JSON\n" + json.dumps(doc)
    us = _iterations(text)
    ns = _iterations(OLD.read_text())
    assert [r.real_time_ms for r in us] == pytest.approx([r.real_time_ms * 1e3 for r in ns])
    # releases without run_type: aggregates recognised by their name suffix
    for b in doc["benchmarks"]:
        del b["run_type"]
    assert len(_iterations(json.dumps(doc))) == 3
    assert len(parse_google_benchmark_json(json.dumps(doc)).iterations_of("single_model")) == 3
    doc["benchmarks"][0]["error_occurred"] = True
    doc["benchmarks"][0]["error_message"] = "boom"
    # a failed run is kept as an error with its message (the runner raises on it, below)
    assert [r.error for r in parse_google_benchmark_json(json.dumps(doc)).errors] == ["boom"]
    with pytest.raises(BenchmarkOutputError):
        parse_google_benchmark_json('{\n  "context": {}')  # cut off, as when daBNN aborts


def test_runner_reports_a_failed_run(tmp_path: Path) -> None:
    doc = json.loads(OLD.read_text())
    doc["benchmarks"][0]["error_occurred"] = True
    doc["benchmarks"][0]["error_message"] = "boom"
    runner = DabnnRunner(_stub(tmp_path, json.dumps(doc)))
    with pytest.raises(RunnerError, match="boom"):
        runner.benchmark(tmp_path / "m.dab", RunPlan(threads=1, warmup=0, runs=3))


def _stub(tmp_path: Path, stdout: str, stderr: str = "", rc: int = 0) -> Path:
    """An executable that records its argv and replays recorded output."""
    (tmp_path / "stdout.txt").write_text(stdout)
    (tmp_path / "stderr.txt").write_text(stderr)
    script = tmp_path / "benchmark_single_model"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, sys, pathlib\n"
        f"d = pathlib.Path({str(tmp_path)!r})\n"
        "(d / 'argv.json').write_text(json.dumps(sys.argv[1:]))\n"
        "sys.stdout.write((d / 'stdout.txt').read_text())\n"
        "sys.stderr.write((d / 'stderr.txt').read_text())\n"
        f"sys.exit({rc})\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def test_runner_command_warmup_and_samples(tmp_path: Path) -> None:
    runner = DabnnRunner(_stub(tmp_path, OLD.read_text()))
    assert isinstance(runner, Runner) and runner.available()
    assert runner.version().startswith("dabnn benchmark_single_model sha256:")
    out = runner.benchmark(tmp_path / "model.dab", RunPlan(threads=1, warmup=5, runs=2))
    argv = json.loads((tmp_path / "argv.json").read_text())
    assert argv == [
        str(tmp_path / "model.dab"),
        "--benchmark_format=json",
        "--benchmark_repetitions=3",
        "--benchmark_report_aggregates_only=false",
    ]
    iters = [b for b in json.loads(OLD.read_text())["benchmarks"] if b["run_type"] == "iteration"]
    # the first repetition is the warm-up and is dropped
    assert out.samples_ms == pytest.approx([b["real_time"] / 1e6 for b in iters[1:]])
    assert out.extra["iterations_per_sample"] == [b["iterations"] for b in iters[1:]]


def test_runner_refuses_threads_and_reports_model_errors(tmp_path: Path) -> None:
    runner = DabnnRunner(_stub(tmp_path, OLD.read_text()))
    with pytest.raises(RunnerError, match="single-threaded") as ei:
        runner.benchmark(tmp_path / "m.dab", RunPlan(threads=4, warmup=0, runs=3))
    assert ei.value.retryable is False
    with pytest.raises(RunnerError, match="reported 3 repetitions, expected 5"):
        runner.benchmark(tmp_path / "m.dab", RunPlan(threads=1, warmup=0, runs=5))
    # what daBNN's benchmark_single_model prints when its loader rejects a layer
    err = (
        "terminate called after throwing an instance of 'std::runtime_error'\n"
        "  what():  Not supported op softmax\n"
    )
    runner = DabnnRunner(_stub(tmp_path, '{\n  "context": {', err, rc=134))
    with pytest.raises(RunnerError, match="Not supported op softmax") as ei:
        runner.benchmark(tmp_path / "m.dab", RunPlan(threads=1, warmup=0, runs=1))
    assert ei.value.retryable is False


def test_available_follows_the_binary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_BINARY, str(tmp_path / "missing"))
    r = DabnnRunner()
    assert not r.available() and "not an executable" in (r.unavailable_reason or "")
    with pytest.raises(RunnerError):
        r.version()
    plain = tmp_path / "plain"
    plain.write_text("")
    assert not DabnnRunner(plain).available()
    monkeypatch.setenv(ENV_BINARY, str(_stub(tmp_path, "")))
    assert DabnnRunner().available()
    monkeypatch.delenv(ENV_BINARY)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert not DabnnRunner().available()

"""The time-based measurement protocol of the `bnnbench-native` CLI (--warmup-ms, --min-time-ms,
--max-runs) and its JSON report, on a small model.

Only the protocol's invariants are asserted, never speeds: a run stops as soon as both its count
and its time are reached (or at --max-runs), so e.g. dropping the last sample must bring the
timed sum under --min-time-ms whenever more than --runs samples were taken.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from native_helpers import NATIVE, make_native, small_network

from native import format as F

CLI = NATIVE / "build" / "bnnbench-native"
EPS = 1e-3  # ms: samples are printed with 6 decimals
KEYS = {
    "version",
    "isa",
    "threads",
    "warmup",
    "runs",
    "input_shape",
    "output_shape",
    "samples_ms",
    "warmup_runs",
    "warmup_ms",
    "timed_ms",
    "requested",
}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    make_native()  # incremental: rebuilds whatever sources changed
    path = tmp_path_factory.mktemp("proto") / "m.bnn"
    F.write_model(small_network(np.random.default_rng(0)), path)
    return path


def cli(model: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLI), str(model), *args], capture_output=True, text=True, check=False
    )


def report(model: Path, *args: str) -> dict:
    proc = cli(model, *args, "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out.keys() >= KEYS
    assert out["runs"] == len(out["samples_ms"]) >= 1
    assert all(s > 0 for s in out["samples_ms"])
    assert out["timed_ms"] == pytest.approx(sum(out["samples_ms"]), abs=EPS * out["runs"])
    assert out["warmup_runs"] >= out["warmup"] and out["warmup_ms"] >= 0
    req = out["requested"]
    assert set(req) == {"warmup", "runs", "warmup_ms", "min_time_ms", "max_runs"}
    assert req["warmup"] == out["warmup"]
    assert req["runs"] <= out["runs"] <= req["max_runs"]
    return out


def test_default_protocol_is_the_fixed_count(model):
    out = report(model, "--warmup", "2", "--runs", "5")
    assert out["runs"] == 5 and out["warmup_runs"] == 2 and out["warmup"] == 2
    assert out["requested"] == {
        "warmup": 2,
        "runs": 5,
        "warmup_ms": 0,
        "min_time_ms": 0,
        "max_runs": 5,
    }
    assert out["input_shape"] == [1, 3, 9, 9] and out["output_shape"] == [1, 7]


def test_min_time_adds_runs_until_the_time_is_reached(model):
    out = report(model, "--warmup", "1", "--runs", "3", "--min-time-ms", "200")
    req, samples = out["requested"], out["samples_ms"]
    assert req["min_time_ms"] == 200 and req["max_runs"] == 1_000_000  # default cap
    assert out["runs"] >= 3
    assert out["timed_ms"] >= 200 - EPS or out["runs"] == req["max_runs"]
    if sum(samples[:3]) < 200:  # a tiny model: the three requested runs were not enough
        assert out["runs"] > 3
    if out["runs"] > 3:  # stopped at the first sample that reached the time
        assert out["timed_ms"] - samples[-1] < 200 + EPS


def test_warmup_ms_extends_the_warmup(model):
    out = report(model, "--warmup", "2", "--warmup-ms", "100", "--runs", "3")
    assert out["requested"]["warmup_ms"] == 100
    assert out["warmup_runs"] >= 2 and out["warmup_ms"] >= 100 - EPS
    assert out["runs"] == 3  # no min time: the timed phase is the fixed count
    if 2 * max(out["samples_ms"]) < 50:  # two runs cannot fill 100 ms
        assert out["warmup_runs"] > 2


def test_max_runs_caps_the_timed_runs(model):
    out = report(model, "--runs", "3", "--min-time-ms", "60000", "--max-runs", "10")
    assert out["requested"]["max_runs"] == 10
    assert 3 <= out["runs"] <= 10
    assert out["runs"] == 10 or out["timed_ms"] >= 60000 - EPS
    # without a min time, a larger cap changes nothing
    out = report(model, "--runs", "4", "--max-runs", "50")
    assert out["runs"] == 4 and out["requested"]["max_runs"] == 50
    out = report(model, "--runs", "4", "--max-runs", "4", "--min-time-ms", "60000")
    assert out["runs"] == 4


def test_max_runs_below_runs_is_a_usage_error(model):
    proc = cli(model, "--runs", "5", "--max-runs", "4", "--json")
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--max-runs (4) must be at least --runs (5)" in lines[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--warmup-ms", "-1"], "--warmup-ms must be an integer"),
        (["--warmup-ms", "x"], "--warmup-ms must be an integer"),
        (["--warmup-ms", "86400001"], "--warmup-ms must be an integer"),
        (["--min-time-ms", "1.5"], "--min-time-ms must be an integer"),
        (["--min-time-ms", ""], "--min-time-ms must be an integer"),
        (["--max-runs", "0"], "--max-runs must be an integer"),
        (["--max-runs", "1000001"], "--max-runs must be an integer"),
        (["--max-runs"], "unknown or incomplete option '--max-runs'"),
    ],
)
def test_bad_protocol_flags_exit_2_with_one_line(model, args, message):
    proc = cli(model, *args)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr


def test_text_output_reports_the_actual_counts(model):
    proc = cli(model, "--warmup", "2", "--runs", "3", "--min-time-ms", "20")
    assert proc.returncode == 0, proc.stderr
    m = re.search(r"(\d+) runs \([\d.]+ ms\) after (\d+) warm-up \([\d.]+ ms\): min ", proc.stdout)
    assert m, proc.stdout
    assert int(m.group(1)) >= 3 and int(m.group(2)) == 2


def test_help_lists_the_protocol_flags(model):
    proc = cli(model, "--help")
    assert proc.returncode == 0
    for flag in ("--warmup-ms", "--min-time-ms", "--max-runs"):
        assert flag in proc.stdout


def test_in_process_runner_applies_the_same_protocol(model: Path) -> None:
    """The local agent's in-process runner follows the CLI's rules: at least `runs` samples
    summing to `min_time_ms`, capped at `max_runs`; warm-up for at least `warmup_ms`."""
    from agent.runners import RunPlan
    from agent.runners.native import NativeRunner
    from bnnbench.schemas import MeasurementProtocol

    runner = NativeRunner()
    plain = runner.benchmark(model, RunPlan(1, 1, 3))
    assert len(plain.samples_ms) == 3
    p = MeasurementProtocol(min_time_ms=150.0, max_runs=50_000, warmup_ms=20.0)
    out = runner.benchmark(model, RunPlan(1, 1, 3, protocol=p))
    n = len(out.samples_ms)
    assert n >= 3 and (sum(out.samples_ms) >= 150.0 - EPS or n == 50_000)
    capped = runner.benchmark(
        model, RunPlan(1, 0, 3, protocol=MeasurementProtocol(min_time_ms=1e6, max_runs=7))
    )
    assert len(capped.samples_ms) == 7
    assert out.extra["protocol_applied"]["min_time_ms"] == 150.0

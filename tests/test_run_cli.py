"""`bnnbench run` as a user runs it: a subprocess on a small native model."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bnnbench.stats import summarize
from native import engine
from native import format as F

CLI = [sys.executable, "-m", "bnnbench.cli"]


def write_small_model(path: Path, channels: int = 64, hw: int = 16, seed: int = 0) -> Path:
    """binary conv 3×3 (zero-padded) → BN → hardtanh → global pool → classifier."""
    rng = np.random.default_rng(seed)
    c = channels
    layers = [
        F.Conv2dBin(
            inputs=[0],
            output=1,
            name="conv",
            weight_sign=np.where(rng.random((c, c, 3, 3)) < 0.5, -1, 1),
            pads=(1, 1, 1, 1),
        ),
        F.Affine(
            inputs=[1],
            output=2,
            name="bn",
            scale=rng.uniform(0.5, 1.5, c).astype("f4"),
            bias=rng.normal(0, 1, c).astype("f4"),
        ),
        F.Clip(inputs=[2], output=3, name="hardtanh"),
        F.GlobalAvgPool(inputs=[3], output=4, name="pool"),
        F.Flatten(inputs=[4], output=5, name="flatten"),
        F.Gemm(inputs=[5], output=6, name="fc", weight=rng.normal(0, 0.1, (10, c)).astype("f4")),
    ]
    F.write_model(F.NativeModel((1, c, hw, hw), layers, n_values=7, output_id=6), path)
    return path


def bnnbench_run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "run", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_small_model(tmp_path_factory.mktemp("run") / "small.bnn")


def test_json_output(model: Path):
    out = bnnbench_run(
        str(model),
        "--library",
        "native",
        "--threads",
        "2",
        "--warmup",
        "2",
        "--runs",
        "7",
        "--json",
    )
    assert out.returncode == 0, out.stderr
    rep = json.loads(out.stdout)
    samples = rep["samples_ms"]
    assert len(samples) == 7 and all(s > 0 for s in samples)
    assert rep["stats"] == summarize(samples).model_dump()
    assert (rep["threads"], rep["warmup"], rep["runs"]) == (2, 2, 7)
    assert rep["runtime"] == "native"
    assert rep["runtime_version"] == engine.version()
    data = model.read_bytes()
    assert rep["artifact"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert rep["artifact"]["size"] == len(data)
    dev = rep["device"]
    for key in ("hostname", "arch", "os", "cpu_model", "cores", "isa_flags"):
        assert key in dev
    assert rep["env"]["python"]
    assert rep["extra"]["input_shape"] == [1, 64, 16, 16]
    assert rep["extra"]["output_shape"] == [1, 10]
    assert rep["extra"]["output_finite"] is True


def test_human_summary(model: Path):
    out = bnnbench_run(str(model), "--runs", "3", "--warmup", "0")
    assert out.returncode == 0, out.stderr
    assert "median" in out.stdout and "3 timed after 0 warm-up" in out.stdout
    assert hashlib.sha256(model.read_bytes()).hexdigest()[:16] in out.stdout


@pytest.mark.parametrize("threads", ["0", "17"])
def test_bad_thread_count(model: Path, threads: str):
    out = bnnbench_run(str(model), "--threads", threads, "--json")
    assert out.returncode == 2
    assert "--threads must be between 1 and 16" in out.stderr
    assert out.stdout == ""


def test_missing_artifact(tmp_path: Path):
    out = bnnbench_run(str(tmp_path / "nope.bnn"), "--json")
    assert out.returncode == 2
    assert "artifact not found" in out.stderr and "nope.bnn" in out.stderr


def test_corrupt_artifact(model: Path, tmp_path: Path):
    truncated = tmp_path / "truncated.bnn"
    truncated.write_bytes(model.read_bytes()[:-100])
    garbage = tmp_path / "garbage.bnn"
    garbage.write_bytes(b"definitely not a model" * 10)
    for bad in (truncated, garbage):
        out = bnnbench_run(str(bad), "--json")
        assert out.returncode == 2, out.stderr
        assert f"cannot run {bad}" in out.stderr and "cannot load the model" in out.stderr
        assert "Traceback" not in out.stderr


def test_unknown_library(model: Path):
    # --runtime: the flag's former name, still accepted
    for flag in ("--library", "--runtime"):
        out = bnnbench_run(str(model), flag, "nosuch")
        assert out.returncode == 2
        assert "unknown library 'nosuch'" in out.stderr and "native" in out.stderr

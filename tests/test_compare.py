"""``bnnbench compare``: selectors, the Mann-Whitney permutation test, and two devices side by
side through the real coordinator (GET /api/v1/results/compare) and the CLI."""

from __future__ import annotations

import itertools
import json
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import CoordinatorProcess, make_tiny_onnx, result_for
from typer.testing import CliRunner

from bnnbench.cli import app
from bnnbench.compare import holm, match_dims, midranks, parse_selector, permutation_p
from bnnbench.http import ApiError


def test_selectors() -> None:
    s = parse_selector("device=pi4, library=LCE,jobs=10-20,after=2026-11-01")
    assert (s.device, s.library, s.jobs) == ("pi4", "lce", (10, 20))
    assert s.after is not None and s.after.isoformat() == "2026-11-01T00:00:00+00:00"
    assert parse_selector("jobs=7").jobs == (7, 7)
    for bad, why in (
        ("", "empty selector"),
        ("device", "is not key=value"),
        ("colour=red", "unknown selector key 'colour'"),
        ("library=caffe", "library='caffe': choose from native, lce, tflite, dabnn"),
        ("jobs=9-3", "ends before it starts"),
        ("model=x", "expected a positive integer id"),
        ("after=yesterday", "not an ISO date"),
        ("device=1,device=2", "names device twice"),
        ("after=2026-11-02,before=2026-11-01", "before= is not after after="),
    ):
        with pytest.raises(ValueError, match=why):
            parse_selector(bad)
    dev, lib = parse_selector("device=3"), parse_selector("library=lce")
    assert match_dims(dev, parse_selector("device=5")) == [
        "library",
        "arch",
        "algorithm",
        "threads",
    ]
    assert match_dims(lib, parse_selector("library=native")) == [
        "device",
        "arch",
        "algorithm",
        "threads",
    ]
    assert match_dims(dev, lib) == ["device", "library", "arch", "algorithm", "threads"]


def test_permutation_test() -> None:
    rng = np.random.default_rng(1)
    a = list(10 + rng.normal(0, 0.1, 20))
    same = list(10 + rng.normal(0, 0.1, 20))
    slower = list(10.5 + rng.normal(0, 0.1, 20))
    p_same, _ = permutation_p(a, same)
    p_slow, used = permutation_p(a, slower)
    assert p_same > 0.05
    assert p_slow == 1 / (1 + used) and used == 10_000  # no permutation is as extreme
    assert permutation_p(a, slower) == (p_slow, used)  # fixed seed: reproducible
    # three runs a side, fully separated: no evidence yet (of the 20 splits, at least the
    # two separated ones are as extreme: p >= 0.1)
    p3, _ = permutation_p([1.0, 1.1, 1.2], [2.0, 2.1, 2.2])
    assert p3 > 0.09
    assert permutation_p([1.0, 2.0], [2.0, 1.0]) == (1.0, 0)
    # against the exact permutation distribution of U (every split of 4 + 5, with a tie)
    xa, xb = [1.0, 2.5, 3.0, 3.0], [2.0, 3.0, 4.0, 5.0, 6.5]
    ranks = midranks(xa + xb)
    centre = 4 * 10 / 2
    obs = abs(ranks[:4].sum() - centre)
    splits = list(itertools.combinations(range(9), 4))
    exact = sum(abs(ranks[list(c)].sum() - centre) >= obs - 1e-9 for c in splits) / len(splits)
    assert list(ranks) == [1, 3, 5, 5, 2, 5, 7, 8, 9]
    assert permutation_p(xa, xb)[0] == pytest.approx(exact, abs=0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow on huge finite samples
        p_big, _ = permutation_p([1e308] * 8, [1.7e308] * 8)
    assert p_big < 0.01
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


def _measure(
    c: CoordinatorProcess, tmp_path: Path
) -> tuple[dict[str, int], dict[tuple[str, str, int], list[float]]]:
    """Two boards measure a tiny FP32 and BNN model at 1 and 2 threads (canned samples):
    the BNN is 20 % slower on pi5 at 1 thread, everything else is the same."""
    models = {
        algo: c.client.upload_model(make_tiny_onnx(tmp_path / f"{algo}.onnx", algo))
        for algo in ("fp32", "bnn")
    }
    rng = np.random.default_rng(0)
    samples: dict[tuple[str, str, int], list[float]] = {}
    devices = {}
    for board in ("pi4", "pi5"):
        reg, agent = c.register_agent(board, hostname=board, cpu_model="Cortex-A72")
        devices[board] = reg.device_id
        for algo, m in models.items():
            jobs = c.client.create_jobs(m.id, "native", [1, 2], runs=12, device_id=reg.device_id)
            c.client.wait_artifact(jobs[0].artifact_id)
            for _ in jobs:
                lease = agent.lease(wait=10)
                assert lease is not None
                base = {"fp32": 40.0, "bnn": 10.0}[algo] / lease.threads
                if (board, algo, lease.threads) == ("pi5", "bnn", 1):
                    base *= 1.2
                xs = [float(x) for x in base * (1 + rng.normal(0, 0.005, 12))]
                samples[(board, algo, lease.threads)] = xs
                assert agent.post_result(lease.job_id, result_for(lease, xs)).valid
    return devices, samples


def test_two_devices_side_by_side(
    coordinator_factory: Callable[..., CoordinatorProcess], tmp_path: Path
) -> None:
    c = coordinator_factory()
    devices, samples = _measure(c, tmp_path)
    out = c.client.compare(f"device={devices['pi4']}", "device=pi5")
    assert out["match_on"] == ["library", "arch", "algorithm", "threads"]
    assert out["test"].startswith("two-sided Mann-Whitney U test on the raw samples")
    assert "10000 resamples, seed 0" in out["test"]
    rows = {(r["algorithm"], r["threads"]): r for r in out["rows"]}
    assert set(rows) == {("fp32", 1), ("fp32", 2), ("bnn", 1), ("bnn", 2)}
    slow = rows[("bnn", 1)]
    assert slow["median_a_ms"] == float(np.median(samples[("pi4", "bnn", 1)]))
    assert slow["median_b_ms"] == float(np.median(samples[("pi5", "bnn", 1)]))
    assert slow["ratio"] == pytest.approx(1.2, rel=0.01)
    assert slow["significant"] and slow["p_value"] < 0.001
    assert (slow["device_a"], slow["device_b"], slow["n_a"]) == ("pi4", "pi5", 12)
    for key in (("fp32", 1), ("fp32", 2), ("bnn", 2)):
        assert rows[key]["ratio"] == pytest.approx(1.0, abs=0.02)
        assert not rows[key]["significant"], rows[key]
    assert out["only_a"] == out["only_b"] == []

    # one library on one device against all of it on another: bad selectors are 422s
    with pytest.raises(ApiError, match="device='pi9' matches no device"):
        c.client.compare("device=pi9", "device=pi5")
    with pytest.raises(ApiError, match="unknown selector key"):
        c.client.compare("board=pi4", "device=pi5")

    # the CLI: a table naming the test, or JSON; a typo is refused before any request
    runner = CliRunner()
    args = ["--coordinator", c.url, "--token", c.admin_token]
    res = runner.invoke(app, ["compare", "device=pi4", "device=pi5", *args])
    assert res.exit_code == 0, res.output
    [slow_line] = [ln for ln in res.stdout.splitlines() if "│ bnn " in ln and "│       1 │" in ln]
    assert f"{slow['ratio']:.3f}" in slow_line and slow_line.rstrip().endswith("* │")
    assert "Mann-Whitney U" in res.stdout and "*" in res.stdout
    res = runner.invoke(app, ["compare", "device=pi4", "device=pi5", "--json", *args])
    assert json.loads(res.stdout)["rows"] == out["rows"]
    res = runner.invoke(app, ["compare", "devic=pi4", "device=pi5", *args])
    assert res.exit_code == 2 and "unknown selector key 'devic'" in res.output

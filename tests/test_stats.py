"""Validity statistics from raw samples (bnnbench.stats, the verdict in coordinator.queue): the
median's order-statistic confidence interval, cv, overflow-safe sums, and the spread bar."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import pytest
from conftest import make_tiny_onnx, result_for

from bnnbench.settings import CoordinatorSettings
from bnnbench.stats import CI_CONFIDENCE, median_ci_rank, rel_ci_halfwidth, summarize
from coordinator import queue


def _coverage(n: int, r: int) -> float:
    """1 − 2·P(B ≤ r−1), B ~ Binomial(n, 1/2), exactly."""
    return 1 - 2 * sum(math.comb(n, j) for j in range(r)) / 2**n


@pytest.mark.parametrize("n", [6, 7, 10, 20, 33, 100, 1000])
def test_median_ci_is_the_narrowest_order_statistic_interval_at_95(n: int) -> None:
    r, level = median_ci_rank(n)
    assert level == pytest.approx(_coverage(n, r), abs=1e-12)
    assert level >= CI_CONFIDENCE
    assert _coverage(n, r + 1) < CI_CONFIDENCE  # one rank further in falls short


def test_known_ranks_and_large_n() -> None:
    # textbook values: n=10 -> [x(2), x(9)], n=20 -> [x(6), x(15)]
    assert median_ci_rank(10)[0] == 2 and median_ci_rank(20)[0] == 6
    # beyond the exact range (log-space sums): the normal approximation's rank
    r, level = median_ci_rank(100_000)
    assert abs(r - (50_000 - 0.98 * math.sqrt(100_000))) < 3
    assert 0.95 <= level < 0.951


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_small_n_gives_min_max_with_its_true_lower_level(n: int) -> None:
    st = summarize([float(i + 1) for i in range(n)])
    assert (st.ci_low_ms, st.ci_high_ms) == (st.min_ms, st.max_ms)
    assert st.ci_level == pytest.approx(max(0.0, 1 - 2 ** (1 - n)) if n > 1 else 0.0)
    assert st.ci_level is not None and st.ci_level < CI_CONFIDENCE


def test_summary_keeps_the_old_fields_and_adds_cv_and_ci() -> None:
    st = summarize([3.0, 1.0, 2.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0])
    assert (st.n, st.median_ms, st.min_ms, st.max_ms, st.p90_ms) == (10, 5.5, 1.0, 10.0, 9.0)
    assert st.mean_ms == 5.5 and st.stdev_ms == pytest.approx(3.0276503540974917)
    assert st.cv == pytest.approx(st.stdev_ms / st.mean_ms)
    assert (st.ci_low_ms, st.ci_high_ms) == (2.0, 9.0)


def test_huge_finite_samples_do_not_overflow() -> None:
    big = 1.7976931348623157e308  # the largest double
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        st = summarize([1e308, 1e308])
        assert st.mean_ms == st.median_ms == 1e308 and st.stdev_ms == 0.0
        st = summarize([big] * 3 + [1e308] * 3)
        values = st.model_dump().values()
        assert all(v is None or math.isfinite(v) for v in values)
        assert st.mean_ms <= big and st.median_ms == big / 2 + 1e308 / 2
        ok, text = queue.verdict([1e308] * 10, 10, CoordinatorSettings())
    assert ok, text


def test_bad_samples_raise() -> None:
    with pytest.raises(ValueError, match="no samples"):
        summarize([])
    with pytest.raises(ValueError, match="finite"):
        summarize([1.0, math.nan])
    with pytest.raises(ValueError, match="finite"):
        summarize([1.0, math.inf])


def test_spread_bar_is_the_medians_interval() -> None:
    s = CoordinatorSettings()
    assert s.max_rel_ci == 0.05 and s.max_rel_stdev is None
    # a real spread: stdev/median 0.35 passed the former bar (0.5); the median is only
    # known to ±47 %: invalid now
    spread = [10, 10.5, 11, 12, 14, 16, 18, 20, 22, 25]
    st = summarize(spread)
    assert st.stdev_ms / st.median_ms < 0.5
    ok, text = queue.verdict(spread, 10, s)
    assert not ok and "too noisy: median 98% CI ±46.7% > ±5.0%" in text
    # three preemption spikes in 20 runs: stdev/median 3.3 failed the former bar, but the
    # median is known to ±0.5 %: valid (the spikes are reported, cv 1.4)
    spikes = [10 + 0.01 * i for i in range(17)] + [100.0, 100.0, 100.0]
    ok, text = queue.verdict(spikes, 20, s)
    assert ok and "median 96% CI ±0.4%" in text and "cv 1.398" in text, text
    # the former bar can still be asked for
    ok, text = queue.verdict(spikes, 20, CoordinatorSettings(max_rel_stdev=0.5))
    assert not ok and "stdev/median 3.26 > 0.5" in text


def test_small_n_verdict_says_what_its_interval_is() -> None:
    ok, text = queue.verdict([2.0, 2.01, 1.99], 3, CoordinatorSettings())
    assert ok and "median 75% CI" in text and "[min, max] of 3; 95% needs 6 samples" in text
    ok, text = queue.verdict([2.0, 2.2, 1.8], 3, CoordinatorSettings())
    assert not ok and "too noisy: median 75% CI ±10.0% > ±5.0% ([min, max] of 3" in text


def test_more_runs_can_make_a_noisy_cell_valid() -> None:
    """Why an interval and not a cv: re-measuring with twice the runs (what the queue does
    with an invalid result) narrows it; the same noise keeps the same cv."""
    pattern = [8.0, 9.0, 9.6, 9.8, 9.9, 10.0, 10.1, 10.3, 11.0, 12.0]
    ok, text = queue.verdict(pattern, 10, CoordinatorSettings())
    assert not ok, text
    ok, text = queue.verdict(pattern * 2, 20, CoordinatorSettings())
    assert ok, text
    assert summarize(pattern).cv == pytest.approx(summarize(pattern * 2).cv, rel=0.05)
    assert rel_ci_halfwidth(summarize(pattern * 2)) < rel_ci_halfwidth(summarize(pattern))


def test_server_computes_the_stats_and_remeasures_a_noisy_result(
    coordinator_factory: Any, tmp_path: Path
) -> None:
    c = coordinator_factory(max_remeasures=1)
    model = c.client.upload_model(make_tiny_onnx(tmp_path / "t.onnx", "bnn"))
    [job] = c.client.create_jobs(model.id, "native", [1], runs=10)
    assert c.client.wait_artifact(job.artifact_id).status == "ready"
    _, agent = c.register_agent("timer", hostname="board-1")
    lease = agent.lease(wait=10)
    noisy = [10, 10.5, 11, 12, 14, 16, 18, 20, 22, 25]
    first = agent.post_result(lease.job_id, result_for(lease, noisy))
    assert not first.valid and "too noisy" in first.verdict
    assert first.stats == summarize(noisy)  # what the server stored, from the raw samples
    assert (first.stats.ci_low_ms, first.stats.ci_high_ms) == (10.5, 22.0)
    # the job came back with twice the runs; a steady re-measurement is valid
    lease = agent.lease(wait=15)
    assert lease.job_id == job.id and lease.runs == 20
    steady = [10.0 + 0.01 * (i % 5) for i in range(20)]
    second = agent.post_result(lease.job_id, result_for(lease, steady))
    assert second.valid and second.verdict.startswith("ok: 20 samples, median 96% CI")
    assert second.stats.cv is not None and second.stats.cv < 0.01
    assert c.client.table()["rows"][0]["latency_ms"]["native"]["bnn"] == second.stats.median_ms

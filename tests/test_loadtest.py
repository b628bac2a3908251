"""tools/loadtest.py itself (issue 14): a small run on SQLite really goes through a coordinator
process and checks exactly-once in its database; its report has the fields docs/loadtest.md
describes. A correctness test of the script, not a performance test: no rate is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))

import loadtest  # noqa: E402


def test_percentiles_and_steady_rate() -> None:
    xs = [float(i) for i in range(1, 101)]
    assert loadtest.percentile(xs, 50) == 50.0
    assert loadtest.percentile(xs, 99) == 99.0
    assert loadtest.percentile([], 50) is None
    # 11 events one second apart: 8 intervals between the 10 % and 90 % marks
    assert loadtest.steady_rate([float(i) for i in range(11)]) == pytest.approx(1.0)
    assert loadtest.steady_rate([0.0, 1.0]) is None


@pytest.mark.slow
def test_small_sqlite_run_completes_every_job_exactly_once(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    cmd = [sys.executable, str(REPO / "tools" / "loadtest.py"), "--agents", "20", "--jobs"]
    cmd += ["200", "--wait", "2", "--heartbeat", "1", "--json", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "exactly once: OK" in proc.stdout
    report = json.loads(out.read_text())
    once = report["exactly_once"]
    assert once["ok"] is True
    assert once["jobs"] == once["results"] == 200
    assert once["lost"] == once["duplicated"] == once["jobs_not_leased_exactly_once"] == 0
    assert once["statuses"] == {"done": 200}
    assert report["errors"] == {}
    lat = report["latency"]
    assert lat["register"]["n"] == 20
    assert lat["lease"]["n"] == lat["result"]["n"] == 200
    assert lat["heartbeat"]["n"] > 0
    for call in ("register", "lease", "result"):
        st = lat[call]
        assert 0 < st["p50_s"] <= st["p99_s"] <= st["max_s"]
    t = report["throughput"]
    assert t["leases"] == 200 and t["results_accepted"] == 200
    assert t["leases_per_s_steady"] > 0 and t["leases_per_s_overall"] > 0
    assert t["jobs_leased_twice_seen_by_agents"] == 0
    jobs = report["phases"]["jobs"]
    # the coordinator process did the work: it used CPU, measured from /proc
    assert jobs["cpu_s"]["coordinators"] > 0 and jobs["cpu_s"]["loadgen"] > 0
    assert report["p99_within_agent_timeouts"] is True
    assert report["agent_timeouts_s"]["heartbeat"] == loadtest.HEARTBEAT_TIMEOUT_S


@pytest.mark.slow
def test_idle_mode_reports_cpu_and_204_latency(tmp_path: Path) -> None:
    out = tmp_path / "idle.json"
    cmd = [sys.executable, str(REPO / "tools" / "loadtest.py"), "--idle", "3", "--agents"]
    cmd += ["10", "--wait", "1", "--heartbeat", "0", "--json", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["config"]["mode"] == "idle" and "exactly_once" not in report
    idle = report["idle"]
    # 10 agents, 3 s of 1 s polls: at least two 204s each; none answered before its wait
    assert idle["polls_answered_204"] >= 20
    assert idle["late_204_p50_s"] >= 0
    assert report["latency"]["lease"]["n"] == 0
    assert idle["coordinator_cores"] is not None


def test_sqlite_refuses_two_coordinators() -> None:
    args = loadtest.parse_args(["--coordinators", "2", "--agents", "2", "--jobs", "2"])
    with pytest.raises(SystemExit, match="one coordinator"):
        loadtest.run(args)

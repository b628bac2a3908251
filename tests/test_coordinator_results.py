"""Results end to end: measurements posted through the agent API become the hardware-track
table (JSON, CSV) and OM rows; ``bnnbench submit`` / ``bnnbench results`` drive it."""

from __future__ import annotations

import csv
import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from conftest import CoordinatorProcess, make_tiny_onnx, result_for
from helpers.campaign import module_coordinator
from typer.testing import CliRunner

from bnnbench import client_cli
from bnnbench.client import BnnbenchClient

# per (algorithm, threads): the samples the fake agent reports (median = middle value)
SAMPLES = {
    ("fp32", 1): [40.0, 41.0, 39.0],
    ("fp32", 2): [21.0, 20.0, 22.0],
    ("bnn", 1): [10.0, 10.1, 9.9],
    ("bnn", 2): [5.0, 5.1, 4.9],
}


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.command("submit")(client_cli.submit)
    app.command("results")(client_cli.results)
    return app


def _serve_jobs(
    agent: BnnbenchClient,
    algo_of: dict[int, str],
    stop: threading.Event,
    samples: dict[tuple[str, int], list[float]] = SAMPLES,
) -> None:
    """A minimal agent loop: lease, report the canned samples."""
    while not stop.is_set():
        lease = agent.lease(wait=1)
        if lease is None:
            continue
        job = lease.job_id
        algo = algo_of[job]
        agent.post_result(job, result_for(lease, samples[(algo, lease.threads)], "native-test"))


def _measure(c: CoordinatorProcess, model_dir: Path) -> dict[str, Any]:
    """Two tiny models measured at 1 and 2 threads by a fake agent reporting SAMPLES."""
    models = {}
    for algo in ("fp32", "bnn"):
        path = make_tiny_onnx(model_dir / f"tiny_{algo}.onnx", algo)
        models[algo] = c.client.upload_model(path)
    jobs = {
        algo: c.client.create_jobs(m.id, "native", [1, 2], runs=3) for algo, m in models.items()
    }
    algo_of = {j.id: algo for algo, js in jobs.items() for j in js}
    reg, agent = c.register_agent("measurer", hostname="pi4", cpu_model="Cortex-A72")
    stop = threading.Event()
    t = threading.Thread(target=_serve_jobs, args=(agent, algo_of, stop))
    t.start()
    try:
        done = c.client.wait_jobs(list(algo_of), timeout=120)
    finally:
        stop.set()
        t.join()
    assert {j.status for j in done} == {"done"}
    return {"c": c, "models": models, "jobs": jobs, "agent": agent, "reg": reg}


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One measured campaign for the tests that only read it."""
    with module_coordinator(tmp_path_factory, "test-admin-token", max_remeasures=2) as c:
        yield _measure(c, tmp_path_factory.mktemp("models"))


@pytest.fixture
def measured_here(coordinator_factory: Any, tmp_path: Path) -> dict[str, Any]:
    """A campaign of the test's own, for a test that posts more results."""
    return _measure(coordinator_factory(max_remeasures=2), tmp_path)


def test_table_json_csv(measured: dict[str, Any]) -> None:
    c: CoordinatorProcess = measured["c"]
    table = c.client.table()
    assert table["columns"] == [{"library": "native", "algorithms": ["fp32", "bnn"]}]
    assert [(r["device"], r["threads"], r["arch"]) for r in table["rows"]] == [
        ("pi4", 1, "TinyVGG"),
        ("pi4", 2, "TinyVGG"),
    ]
    assert table["rows"][0]["latency_ms"] == {"native": {"fp32": 40.0, "bnn": 10.0}}
    assert table["rows"][1]["latency_ms"] == {"native": {"fp32": 21.0, "bnn": 5.0}}
    (om,) = table["om"]
    assert (om["library"], om["algorithm"], om["speedup_cells"]) == ("native", "bnn", 2)
    assert om["speedup"] == pytest.approx((40 / 10 + 21 / 5) / 2)
    arts = {a.model_id: a for a in c.client.list_artifacts()}
    size_fp32 = arts[measured["models"]["fp32"].id].size
    size_bnn = arts[measured["models"]["bnn"].id].size
    assert om["compression"] == pytest.approx(size_fp32 / size_bnn) and om["compression"] > 1
    assert om["compression_archs"] == ["TinyVGG"]
    assert om["om"] == pytest.approx(((om["speedup"] ** 2 + om["compression"] ** 2) / 2) ** 0.5)

    rows = list(csv.DictReader(io.StringIO(c.client.table_csv())))
    assert list(rows[0])[:6] == ["device", "threads", "arch", "library", "algorithm", "latency_ms"]
    assert [(r["threads"], r["algorithm"], float(r["latency_ms"])) for r in rows] == [
        ("1", "fp32", 40.0),
        ("1", "bnn", 10.0),
        ("2", "fp32", 21.0),
        ("2", "bnn", 5.0),
    ]
    assert {r["n"] for r in rows} == {"3"}
    assert all(r["artifact_sha256"] in {a.sha256 for a in arts.values()} for r in rows)
    assert {r["runtime_version"] for r in rows} == {"native-test"}


@pytest.mark.slow  # a coordinator and a campaign of its own
def test_table_uses_latest_valid_result(measured_here: dict[str, Any]) -> None:
    c: CoordinatorProcess = measured_here["c"]
    agent: BnnbenchClient = measured_here["agent"]
    bnn = measured_here["models"]["bnn"]
    # re-measure bnn at 1 thread: first an invalid (too few samples) result, then a valid one
    (j_invalid,) = c.client.create_jobs(bnn.id, "native", [1], runs=3)
    lease = agent.lease(wait=5)
    assert lease.job_id == j_invalid.id
    r = agent.post_result(lease.job_id, result_for(lease, [1.0]))
    assert not r.valid
    row1 = c.client.table()["rows"][0]
    assert row1["latency_ms"]["native"]["bnn"] == 10.0  # invalid results never enter
    # the invalid result sent its job back with twice the runs: the re-measurement counts
    lease = agent.lease(wait=15)
    assert lease.job_id == j_invalid.id and lease.runs == 6
    assert agent.post_result(lease.job_id, result_for(lease, [8.0] * 6)).valid
    assert [x.valid for x in c.client.results(job_id=j_invalid.id)] == [False, True]
    table = c.client.table()
    assert table["rows"][0]["latency_ms"]["native"]["bnn"] == 8.0
    assert len(table["cells"]) == 4  # still one cell per (device, threads, arch, lib, algo)


def test_results_cli_formats(measured: dict[str, Any]) -> None:
    c: CoordinatorProcess = measured["c"]
    runner = CliRunner()
    args = ["--coordinator", c.url, "--token", c.admin_token]
    out = runner.invoke(_cli(), ["results", *args, "--format", "json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout) == c.client.table()
    out = runner.invoke(_cli(), ["results", *args, "--format", "csv"])
    assert out.exit_code == 0 and out.stdout == c.client.table_csv()
    # defaults from the environment, table format
    env = {"BNNBENCH_COORDINATOR": c.url, "BNNBENCH_TOKEN": c.admin_token, "COLUMNS": "200"}
    out = runner.invoke(_cli(), ["results"], env=env)
    assert out.exit_code == 0, out.output
    for text in (
        "Hardware",
        "Threads",
        "Arch.",
        "FP32",
        "BNN",
        "pi4",
        "TinyVGG",
        "40.000",
        "5.000",
        "Speedup",
        "Compression",
        "OM",
    ):
        assert text in out.stdout, text
    out = runner.invoke(_cli(), ["results", "--coordinator", c.url, "--token", "nope"])
    assert out.exit_code == 2 and "invalid token" in out.output


@pytest.mark.slow  # a coordinator and a campaign of its own
def test_submit_wait(coordinator: CoordinatorProcess, tmp_path: Path) -> None:
    c = coordinator
    zoo = tmp_path / "zoo"
    make_tiny_onnx(zoo / "a_fp32.onnx", "fp32")
    make_tiny_onnx(zoo / "b_bnn.onnx", "bnn")
    (zoo / "notes.txt").write_text("not a model")
    reg, agent = c.register_agent("cli-agent")
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            lease = agent.lease(wait=1)
            if lease is not None:
                agent.post_result(lease.job_id, result_for(lease, [2.0, 2.0, 2.0], "t"))

    t = threading.Thread(target=serve)
    t.start()
    try:
        out = CliRunner().invoke(
            _cli(),
            [
                "submit",
                str(zoo),
                "--coordinator",
                c.url,
                "--token",
                c.admin_token,
                "--threads",
                "1",
                "--threads",
                "2",
                "--runs",
                "3",
                "--warmup",
                "1",
                "--wait",
                "--timeout",
                "120",
            ],
        )
        assert out.exit_code == 0, out.output
        assert "4 done, 0 failed" in out.output
        jobs = c.client.list_jobs()
        assert len(jobs) == 4 and {j.status for j in jobs} == {"done"}
        assert {(j.threads, j.runs, j.warmup) for j in jobs} == {(1, 3, 1), (2, 3, 1)}
        assert sorted(m.name for m in c.client.list_models()) == ["a_fp32.onnx", "b_bnn.onnx"]

        # an unsupported model: its jobs fail, submit says why and exits non-zero
        bad = make_tiny_onnx(tmp_path / "bad.onnx", extra_op="Softplus")
        out = CliRunner().invoke(
            _cli(),
            [
                "submit",
                str(bad),
                "--coordinator",
                c.url,
                "--token",
                c.admin_token,
                "--wait",
                "--timeout",
                "120",
            ],
        )
        assert out.exit_code == 1, out.output
        assert "0 done, 1 failed" in out.output and "Softplus" in out.output
    finally:
        stop.set()
        t.join()
    out = CliRunner().invoke(
        _cli(),
        [
            "submit",
            str(tmp_path / "missing.onnx"),
            "--coordinator",
            c.url,
            "--token",
            c.admin_token,
        ],
        env={"COLUMNS": "200"},  # the error box wraps at the terminal width
    )
    assert out.exit_code != 0 and "no such file" in out.output

"""Like-with-like results on a real coordinator (uvicorn, SQLite file): two devices that share
a hostname are two rows whose speedups are each their own; the table's exports (CSV,
Markdown, LaTeX) and the paper's reference fleet through the API and ``bnnbench results``;
``bnnbench results --db`` reads the database file with no coordinator running.

One coordinator serves the whole module (the last test stops it)."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from conftest import TEST_SETTINGS, CoordinatorProcess, make_tiny_onnx, result_for
from typer.testing import CliRunner

from bnnbench import client_cli
from bnnbench.client import BnnbenchClient
from coordinator import exports

BOARD = "Raspberry Pi 4 Model B Rev 1.4"  # both boards: one label, one hostname
# per device, per (algorithm, threads): the latency every sample reports (no spread: valid)
LATENCY = {
    "a": {("fp32", 1): 40.0, ("fp32", 2): 21.0, ("bnn", 1): 10.0, ("bnn", 2): 5.0},
    "b": {("fp32", 1): 60.0, ("fp32", 2): 30.0, ("bnn", 1): 12.0, ("bnn", 2): 10.0},
}


def _measure(
    c: CoordinatorProcess, agent: BnnbenchClient, device_id: int, name: str, models: dict[str, Any]
) -> None:
    """Queue fp32 and bnn at 1 and 2 threads on one device; its agent leases and reports."""
    algo_of = {}
    for algo, m in models.items():
        for j in c.client.create_jobs(m.id, "native", [1, 2], device_id=device_id, runs=3):
            algo_of[j.id] = algo
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        lease = agent.lease(wait=1)
        if lease is None:
            if all(c.client.get_job(j).status == "done" for j in algo_of):
                return
            continue
        ms = LATENCY[name][(algo_of[lease.job_id], lease.threads)]
        assert agent.post_result(lease.job_id, result_for(lease, [ms] * 3, "native-test")).valid
    raise AssertionError(f"jobs not done: {[c.client.get_job(j) for j in algo_of]}")


def _register(c: CoordinatorProcess, name: str) -> tuple[int, BnnbenchClient]:
    reg, agent = c.register_agent(
        f"agent-{name}",
        hostname="pi4",
        identity=f"machine-id:{name * 32}",
        identity_source="machine-id",
        board=BOARD,
    )
    return reg.device_id, agent


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    c = CoordinatorProcess(
        tmp_path_factory.mktemp("coordinator"), dict(TEST_SETTINGS), "test-admin-token"
    ).start()
    try:
        tmp = tmp_path_factory.mktemp("models")
        models = {
            algo: c.client.upload_model(make_tiny_onnx(tmp / f"tiny_{algo}.onnx", algo))
            for algo in ("fp32", "bnn")
        }
        id_a, agent_a = _register(c, "a")
        _measure(c, agent_a, id_a, "a", models)
        alone = c.client.table()  # device a, before b exists
        id_b, agent_b = _register(c, "b")
        _measure(c, agent_b, id_b, "b", models)
        yield {"c": c, "alone": alone, "ids": {"a": id_a, "b": id_b}}
    finally:
        c.stop()


def _cells_of(table: dict[str, Any], device_id: int) -> list[tuple[int, float, float, float]]:
    (om,) = table["om"]
    return [
        (x["threads"], x["baseline_ms"], x["latency_ms"], x["speedup"])
        for x in om["cells"]
        if x["device_id"] == device_id
    ]


def test_same_hostname_two_devices_two_rows(fleet: dict[str, Any]) -> None:
    c: CoordinatorProcess = fleet["c"]
    ids = fleet["ids"]
    assert ids["a"] != ids["b"]
    assert {d.hostname for d in c.client.devices()} == {"pi4"}  # one hostname, two devices
    alone, both = fleet["alone"], c.client.table()
    # device a alone: its label; with b: one row per device and (threads, arch), ids appended
    assert [(r["device"], r["threads"]) for r in alone["rows"]] == [(BOARD, 1), (BOARD, 2)]
    assert [(r["device"], r["device_id"], r["threads"]) for r in both["rows"]] == [
        (f"{BOARD} #{ids['a']}", ids["a"], 1),
        (f"{BOARD} #{ids['a']}", ids["a"], 2),
        (f"{BOARD} #{ids['b']}", ids["b"], 1),
        (f"{BOARD} #{ids['b']}", ids["b"], 2),
    ]
    # a's speedups are the same as when it was alone; b's are b's own (never a's fp32 / b's bnn)
    assert (
        _cells_of(both, ids["a"])
        == _cells_of(alone, ids["a"])
        == [
            (1, 40.0, 10.0, 4.0),
            (2, 21.0, 5.0, 4.2),
        ]
    )
    assert _cells_of(both, ids["b"]) == [(1, 60.0, 12.0, 5.0), (2, 30.0, 10.0, 3.0)]
    (om,) = both["om"]
    assert om["speedup_cells"] == 4 and om["speedup"] == pytest.approx((4.0 + 4.2 + 5.0 + 3.0) / 4)
    assert om["excluded"] == [] and om["common_speedup"] == om["speedup"]
    assert "over 4 cells" in om["averaging"]


def test_api_exports_and_reference(fleet: dict[str, Any]) -> None:
    c: CoordinatorProcess = fleet["c"]
    for ref in (False, True):
        table = c.client.table(reference=ref)
        # the API renders with the same module as the CLI
        assert c.client.table_markdown(reference=ref) == exports.to_markdown(table)
        assert c.client.table_latex(reference=ref) == exports.to_latex(table)
        assert c.client.table_csv(reference=ref) == exports.to_csv(table)
    plain, ref_table = c.client.table(), c.client.table(reference=True)
    assert "reference" not in plain
    # the paper's rows join the table, never this fleet's OM
    assert ref_table["om"] == plain["om"]
    assert len(ref_table["rows"]) == len(plain["rows"]) + 14 * 12 + 2 * 3
    paper_om = {(o["library"], o["algorithm"]): o for o in ref_table["reference"]["om"]}
    assert round(paper_om[("lce", "bnn")]["speedup"], 2) == 5.53
    # our Pi 4 rows come right after the paper's Raspberrypi 4B rows
    names = [r["device"] for r in ref_table["rows"]]
    last_paper = max(i for i, n in enumerate(names) if n == "Raspberrypi 4B (paper)")
    assert names[last_paper + 1 : last_paper + 5] == [r["device"] for r in plain["rows"]]
    md = c.client.table_markdown(reference=True)
    assert (
        f"| {BOARD} #{fleet['ids']['a']} | 1 | TinyVGG | – | – | – | – | – | 40.000 | 10.000 |"
        in md
    )
    tex = c.client.table_latex()
    assert r"\multicolumn{2}{c}{bnnbench}" in tex and "4.05" in tex  # mean speedup of 4 cells
    csv_text = c.client.table_csv(reference=True)
    assert csv_text.splitlines()[0].endswith(",device_id,source")
    assert csv_text.count(",paper\n") == 570


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.command("results")(client_cli.results)
    app.command("noop")(lambda: None)
    return app


def test_cli_formats_match_the_api(fleet: dict[str, Any], tmp_path: Path) -> None:
    c: CoordinatorProcess = fleet["c"]
    runner = CliRunner()
    env = {"BNNBENCH_COORDINATOR": c.url, "BNNBENCH_TOKEN": c.admin_token, "COLUMNS": "250"}
    out = runner.invoke(_cli(), ["results", "-f", "markdown"], env=env)
    assert out.exit_code == 0, out.output
    assert out.stdout == c.client.table_markdown()
    dest = tmp_path / "table.tex"
    out = runner.invoke(_cli(), ["results", "-f", "latex", "--output", str(dest)], env=env)
    assert out.exit_code == 0 and out.stdout == ""
    assert dest.read_text() == c.client.table_latex()
    out = runner.invoke(_cli(), ["results", "-f", "csv", "--reference"], env=env)
    assert out.stdout == c.client.table_csv(reference=True)
    out = runner.invoke(_cli(), ["results", "-f", "json", "--reference"], env=env)
    assert json.loads(out.stdout) == c.client.table(reference=True)
    out = runner.invoke(_cli(), ["results", "--reference"], env=env)
    assert out.exit_code == 0, out.output
    for text in (f"{BOARD} #", "Raspberrypi 4B (paper)", "common set", "Table 3", "4.05"):
        assert text in out.stdout, text
    out = runner.invoke(_cli(), ["results", "-f", "markdown", "--token", "nope"], env=env)
    assert out.exit_code == 2 and "invalid token" in out.output


def _sha256(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_cli_db_reads_the_file_without_a_coordinator(fleet: dict[str, Any], tmp_path: Path) -> None:
    c: CoordinatorProcess = fleet["c"]
    runner = CliRunner()
    api = {ref: c.client.table(reference=ref) for ref in (False, True)}
    # while the coordinator runs (WAL: a reader beside the writer)
    out = runner.invoke(_cli(), ["results", "--db", str(c.db_path), "-f", "json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout) == api[False]
    c.stop()
    before = _sha256(c.db_path)
    # no coordinator at all (an unreachable URL in the environment is never asked)
    env = {"BNNBENCH_COORDINATOR": "http://127.0.0.1:9"}
    out = runner.invoke(_cli(), ["results", "--db", str(c.db_path), "-f", "json"], env=env)
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout) == api[False]
    for fmt in ("markdown", "latex", "csv"):
        out = runner.invoke(
            _cli(), ["results", "--db", str(c.db_path), "--reference", "-f", fmt], env=env
        )
        assert out.exit_code == 0, out.output
        assert out.stdout == exports.render(api[True], fmt)
    out = runner.invoke(_cli(), ["results", "--db", str(c.db_path)], env={"COLUMNS": "250"})
    assert out.exit_code == 0 and f"{BOARD} #" in out.stdout
    assert _sha256(c.db_path) == before  # opened read-only: not one byte written
    # clear errors for what is not a coordinator database
    out = runner.invoke(_cli(), ["results", "--db", str(tmp_path / "nope.db")])
    # Rich wraps the message at the terminal width: compare with the line breaks folded
    assert out.exit_code == 2 and "no such database file" in " ".join(out.output.split())
    junk = tmp_path / "junk.db"
    junk.write_text("not sqlite")
    out = runner.invoke(_cli(), ["results", "--db", str(junk)], env={"COLUMNS": "250"})
    assert out.exit_code == 2 and "not a readable bnnbench database" in out.output

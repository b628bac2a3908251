"""The paper's reference fleet (coordinator/reference/) and like-with-like speedups, as pure
functions: the packaged Tables 17–20 reproduce cell for cell, the speedups and OM recomputed
from them are the figures docs/metrics.md states, cells pair within one device only, and
the cells left out of an average are named with the reason."""

from __future__ import annotations

import csv
import math
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest

from coordinator import metrics, reference
from coordinator.metrics import ArtifactSize, Measurement

REPO = Path(__file__).resolve().parent.parent
PACKAGE_DIR = Path(reference.__file__).parent


def _csv_rows() -> list[dict[str, str]]:
    # read the file itself, not through the module under test
    with open(PACKAGE_DIR / reference.HARDWARE_CSV, newline="") as f:
        return list(csv.DictReader(f))


def test_reference_csvs_ship_as_package_data() -> None:
    with open(REPO / "pyproject.toml", "rb") as f:
        globs = tomllib.load(f)["tool"]["setuptools"]["package-data"]["coordinator"]
    data = [p for p in PACKAGE_DIR.iterdir() if p.suffix == ".csv"]
    assert {p.name for p in data} == {reference.HARDWARE_CSV, reference.TABLE3_CSV}
    for p in data:
        rel = p.relative_to(REPO / "coordinator").as_posix()
        assert any(fnmatch(rel, g) for g in globs), f"{rel} not in package-data"
    # read through importlib.resources: what an installed package does
    assert (
        reference.read_text(reference.HARDWARE_CSV)
        == (PACKAGE_DIR / "bibench_hardware_latency_ms.csv").read_text()
    )


def test_latency_table_reproduces_every_paper_cell() -> None:
    rows = _csv_rows()
    assert len(rows) == 570 and len({r["device"] for r in rows}) == 14
    t = reference.table()
    by_key = {(r["device"], r["threads"], r["arch"]): r for r in t["rows"]}
    for r in rows:
        row = by_key[(r["device"] + " (paper)", int(r["threads"]), r["arch"])]
        assert row["source"] == "paper"
        lib = reference.LIBRARIES[r["library"]]
        assert row["latency_ms"][lib][r["algorithm"]] == float(r["latency_ms"]), r
    # nothing added: the table holds exactly the CSV's cells
    n_cells = sum(len(a) for row in t["rows"] for a in row["latency_ms"].values())
    assert n_cells == len(rows)
    assert t["columns"] == [
        {"library": "lce", "algorithms": ["fp32", "bnn", "react"]},
        {"library": "dabnn", "algorithms": ["fp32", "bnn"]},
    ]
    assert t["om"] == []  # no measurements of one's own: the paper's OM is under "reference"


def test_paper_speedups_per_variant_and_common_set() -> None:
    om = {(o["library"], o["algorithm"]): o for o in reference.summary()["om"]}
    assert set(om) == {("lce", "bnn"), ("lce", "react"), ("dabnn", "bnn")}
    # docs/metrics.md: plain mean over the 174 Larq cells
    assert round(om[("lce", "bnn")]["speedup"], 2) == 5.53
    assert round(om[("lce", "react")]["speedup"], 2) == 5.06
    assert round(om[("dabnn", "bnn")]["speedup"], 2) == 5.61
    assert [om[k]["speedup_cells"] for k in om] == [174, 174, 24]
    # every Larq cell of the paper has FP32, BNN and ReAct: the common set is the same cells
    for o in om.values():
        assert o["common_speedup"] == o["speedup"]
        assert o["common_speedup_cells"] == o["speedup_cells"]
        assert o["excluded"] == [] and o["common_excluded"] == []
    assert om[("lce", "react")]["common_algorithms"] == ["fp32", "bnn", "react"]
    assert "174" in om[("lce", "bnn")]["common_averaging"]


def test_table3_om_and_what_the_cells_give() -> None:
    t3 = {t["algorithm"]: t for t in reference.table3()}
    assert set(t3) == {"bnn", "dorefa", "bireal", "react", "recu", "fda"}  # XNOR(++) undeployable
    for t in t3.values():
        # OM = sqrt((speedup² + compression²)/2) reproduces Table 3 from its own two ratios
        assert round(t["om_recomputed"], 2) == t["om"]
    assert (t3["bnn"]["speedup"], t3["bnn"]["compression"], t3["bnn"]["om"]) == (5.45, 15.62, 11.7)
    assert (t3["react"]["speedup"], t3["react"]["om"]) == (4.89, 11.51)
    # from Tables 17-20 with this tool's averaging (and Table 3's compression)
    assert round(t3["bnn"]["speedup_from_cells"], 2) == 5.53
    assert round(t3["react"]["speedup_from_cells"], 2) == 5.06
    assert round(t3["bnn"]["om_from_cells"], 2) == 11.72
    assert round(t3["react"]["om_from_cells"], 2) == 11.54
    assert t3["fda"]["deployed_as"] == "bnn" and t3["react"]["deployed_as"] == "react"


# docs/metrics.md, "How close the cells come to Table 3": (BNN, ReAct), 2 decimals
DOCUMENTED = {
    "cell-mean": (5.53, 5.06),
    "device-mean": (5.54, 5.07),
    "arch-mean": (5.53, 5.06),
    "thread-mean": (4.80, 4.41),
    "geometric-mean": (4.42, 3.93),
    "median": (5.18, 4.74),
    "ratio-of-totals": (4.53, 3.91),
    "no-16-threads": (5.68, 5.20),
    "no-apple": (5.61, 5.10),
    "1-thread": (7.94, 7.50),
    "with-dabnn": (5.54, 5.06),
    "best-fp32-baseline": (5.45, 4.98),
}


def test_averaging_study_matches_the_documented_figures() -> None:
    study = {
        s["name"]: (round(s["bnn"], 2), round(s["react"], 2)) for s in reference.averaging_study()
    }
    assert study == DOCUMENTED
    # none reproduces both of Table 3's speedups: the paper's averaging stays unknown
    assert (5.45, 4.89) not in study.values()
    doc = (REPO / "docs" / "metrics.md").read_text()
    for name, (b, r) in DOCUMENTED.items():
        assert f"| {name} |" in doc and f"| {b:.2f} | {r:.2f} |" in doc, name


def test_paper_device_for() -> None:
    f = reference.paper_device_for
    assert f("Raspberry Pi 4 Model B Rev 1.4") == "Raspberrypi 4B"
    assert f(None, "BCM2711") == "Raspberrypi 4B"
    assert f("Raspberry Pi 3 Model B Plus Rev 1.3") == "Raspberrypi 3B+"
    assert f("Apple M1 Max") == "Apple M1 Max" and f("Apple M1") == "Apple M1"
    assert f("my phone", "Kirin 9000E") == "Kirin 9000E"
    # other chips of a family are not the paper's
    for other in ("Apple M1 Pro", "Kirin 9000", "Snapdragon 888+", "Dimensity 9000+", "x86"):
        assert f(other) is None, other


# ------------------------------------------------------------------ like with like


def _board(dev: str, dev_id: int, latencies: dict[int, dict[str, float]]) -> list[Measurement]:
    """One board's Larq ResNet18 cells: threads -> algorithm -> median ms."""
    return [
        Measurement(dev, thr, "ResNet18", "lce", algo, ms, device_id=dev_id)
        for thr, by_algo in latencies.items()
        for algo, ms in by_algo.items()
    ]


def test_cells_pair_within_one_device_not_one_name() -> None:
    # two boards with one name: pairing on the name would mix board 1's fp32 with board 2's
    ms = [
        *_board("pi4", 1, {1: {"fp32": 100.0, "bnn": 20.0}}),
        *_board("pi4", 2, {1: {"fp32": 60.0, "bnn": 30.0}}),
    ]
    t = metrics.latency_table(ms)
    assert [(r["device"], r["device_id"]) for r in t["rows"]] == [("pi4", 1), ("pi4", 2)]
    cells = metrics.speedup_cells(ms, "lce", "bnn")
    assert sorted((c["device_id"], c["speedup"]) for c in cells) == [(1, 5.0), (2, 2.0)]
    (row,) = metrics.om_rows(ms)
    assert row["speedup"] == pytest.approx(3.5) and row["speedup_cells"] == 2
    # board 2 alone: its own speedup, unchanged by board 1's rows
    (alone,) = metrics.om_rows(ms[2:])
    assert alone["cells"][0]["speedup"] == 2.0


def test_left_out_cells_and_the_common_set() -> None:
    latencies = {
        # 1 thread: fp32, bnn, react — in both averages
        1: {"fp32": 100.0, "bnn": 20.0, "react": 25.0},
        # 2 threads: no react — in bnn's per-variant average, not in the common set
        2: {"fp32": 60.0, "bnn": 20.0},
        # 4 threads: no fp32 — in no average
        4: {"bnn": 9.0, "react": 10.0},
    }
    ms = _board("Pi 4B", 7, latencies)
    sizes = [
        ArtifactSize("lce", "ResNet18", "fp32", 4000),
        ArtifactSize("lce", "ResNet18", "bnn", 400),
        ArtifactSize("lce", "ResNet18", "react", 500),
    ]
    om = {o["algorithm"]: o for o in metrics.om_rows(ms, sizes)}
    bnn, react = om["bnn"], om["react"]
    assert (bnn["speedup"], bnn["speedup_cells"]) == (pytest.approx(4.0), 2)  # (5 + 3) / 2
    assert (bnn["common_speedup"], bnn["common_speedup_cells"]) == (5.0, 1)
    assert (react["speedup"], react["common_speedup"]) == (4.0, 4.0)
    assert bnn["common_algorithms"] == ["fp32", "bnn", "react"]
    assert [c["reason"] for c in bnn["excluded"]] == [
        "bnn measured, fp32 missing on Pi 4B, 4 threads, ResNet18"
    ]
    assert [c["reason"] for c in react["excluded"]] == [
        "fp32 measured, react missing on Pi 4B, 2 threads, ResNet18",
        "react measured, fp32 missing on Pi 4B, 4 threads, ResNet18",
    ]
    assert [c["reason"] for c in bnn["common_excluded"]] == [
        "fp32, bnn measured, react missing on Pi 4B, 2 threads, ResNet18",
        "bnn, react measured, fp32 missing on Pi 4B, 4 threads, ResNet18",
    ]
    assert bnn["common_excluded"] == react["common_excluded"]  # one set for both variants
    assert bnn["compression"] == 10.0 and bnn["common_compression"] == 10.0
    assert bnn["om"] == pytest.approx(math.sqrt((4.0**2 + 10.0**2) / 2))
    assert bnn["common_om"] == pytest.approx(math.sqrt((5.0**2 + 10.0**2) / 2))
    assert "over 2 cells (device, threads, arch)" in bnn["averaging"]
    assert "(1 left out)" in bnn["averaging"]
    assert "over 1 cell where fp32, bnn and react were all measured" in bnn["common_averaging"]


def test_measured_board_sorts_next_to_the_papers() -> None:
    paper = reference.measurements()
    mine = Measurement(
        "Raspberry Pi 4 Model B Rev 1.4",
        4,
        "ResNet18",
        "lce",
        "bnn",
        30.0,
        device_id=3,
        group="Raspberrypi 4B",
    )
    rows = metrics.latency_table([*paper, mine])["rows"]
    names = [r["device"] for r in rows]
    i = names.index(mine.device)
    assert names[i - 1] == "Raspberrypi 4B (paper)"  # right after the paper's Pi 4B rows
    assert rows[i]["source"] == "measured"
    # the paper's rows and the measured one never pair: OM of the mix = OM of each alone
    mixed = {(o["library"], o["algorithm"]): o["speedup"] for o in metrics.om_rows([*paper, mine])}
    alone = {(o["library"], o["algorithm"]): o["speedup"] for o in metrics.om_rows(paper)}
    assert mixed == alone


def test_long_rows_carry_the_source() -> None:
    rows = metrics.long_rows(reference.measurements())
    assert {r["source"] for r in rows} == {"paper"}
    assert list(rows[0])[:7] == [
        "device",
        "threads",
        "arch",
        "library",
        "algorithm",
        "latency_ms",
        "source",
    ]

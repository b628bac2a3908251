"""Hardware-track metrics against the paper's own numbers (Tables 17–20, Table 3)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
from helpers.paper import paper_cells

from coordinator import reference
from coordinator.metrics import (
    ArtifactSize,
    Measurement,
    compression_cells,
    latency_table,
    long_rows,
    om_rows,
    overall_metric,
    speedup_cells,
)

# the paper's cells ship with the package (coordinator/reference/): the one copy in the repo
REFERENCE = Path(reference.__file__).parent


@pytest.fixture(scope="module")
def paper() -> list[Measurement]:
    ms = paper_cells()
    assert len(ms) > 400  # the whole appendix, not a stub
    return ms


def test_paper_mean_speedups_over_all_cells(paper: list[Measurement]) -> None:
    rows = {(r["library"], r["algorithm"]): r for r in om_rows(paper)}
    assert set(rows) == {("larq", "bnn"), ("larq", "react"), ("dabnn", "bnn")}
    assert round(rows[("larq", "bnn")]["speedup"], 2) == 5.53
    assert round(rows[("larq", "react")]["speedup"], 2) == 5.06
    # every larq (device, threads, arch) cell has fp32, bnn and react in the paper
    n_larq_cells = len({(m.device, m.threads, m.arch) for m in paper if m.library == "larq"})
    assert rows[("larq", "bnn")]["speedup_cells"] == n_larq_cells
    assert rows[("larq", "react")]["speedup_cells"] == n_larq_cells
    # daBNN is single-threaded: its cells are 1-thread only
    assert {c["threads"] for c in rows[("dabnn", "bnn")]["cells"]} == {1}
    # no sizes given: compression and OM unknown, never invented
    assert rows[("larq", "bnn")]["compression"] is None
    assert rows[("larq", "bnn")]["om"] is None
    assert "174" in rows[("larq", "bnn")]["averaging"]


def test_speedup_cell_values(paper: list[Measurement]) -> None:
    cells = {(c["device"], c["threads"], c["arch"]): c for c in speedup_cells(paper, "larq", "bnn")}
    c = cells[("Kirin 970", 1, "ResNet18")]
    assert c["baseline_ms"] == 716.427 and c["latency_ms"] == 123.263
    assert c["speedup"] == pytest.approx(716.427 / 123.263)
    # the mean is the plain mean of the listed cells
    mean = sum(x["speedup"] for x in cells.values()) / len(cells)
    row = next(r for r in om_rows(paper) if (r["library"], r["algorithm"]) == ("larq", "bnn"))
    assert row["speedup"] == pytest.approx(mean)


def test_latency_table_layout(paper: list[Measurement]) -> None:
    t = latency_table(paper)
    assert t["columns"] == [
        {"library": "larq", "algorithms": ["fp32", "bnn", "react"]},
        {"library": "dabnn", "algorithms": ["fp32", "bnn"]},
    ]
    keys = [(r["device"], r["threads"], r["arch"]) for r in t["rows"]]
    assert keys == sorted(keys) and len(keys) == len(set(keys))
    row = next(
        r
        for r in t["rows"]
        if (r["device"], r["threads"], r["arch"]) == ("Kirin 970", 1, "ResNet18")
    )
    assert row["latency_ms"] == {
        "larq": {"fp32": 716.427, "bnn": 123.263, "react": 126.457},
        "dabnn": {"fp32": 427.585, "bnn": 72.585},
    }
    multi = next(
        r
        for r in t["rows"]
        if (r["device"], r["threads"], r["arch"]) == ("Kirin 970", 2, "ResNet18")
    )
    assert "dabnn" not in multi["latency_ms"]  # no daBNN column values beyond 1 thread


def test_long_rows_round_trip_the_reference(paper: list[Measurement]) -> None:
    rows = long_rows(paper)
    assert len(rows) == len(paper)
    assert list(rows[0])[:6] == ["device", "threads", "arch", "library", "algorithm", "latency_ms"]
    assert {
        (r["device"], r["threads"], r["arch"], r["library"], r["algorithm"], r["latency_ms"])
        for r in rows
    } == {(m.device, m.threads, m.arch, m.library, m.algorithm, m.latency_ms) for m in paper}


def test_om_formula_matches_table3() -> None:
    with open(REFERENCE / reference.TABLE3_CSV) as f:
        for r in csv.DictReader(f):
            if not r["hardware_om"]:
                continue
            om = overall_metric(float(r["hardware_speedup"]), float(r["hardware_compression"]))
            assert round(om, 2) == pytest.approx(float(r["hardware_om"]), abs=0.011)
    assert overall_metric(None, 3.0) is None


def test_compression_and_om_from_sizes() -> None:
    ms = [
        Measurement("pi4", 1, "ResNet18", "native", "fp32", 100.0),
        Measurement("pi4", 1, "ResNet18", "native", "bnn", 20.0),
        Measurement("pi4", 2, "ResNet18", "native", "fp32", 60.0),
        Measurement("pi4", 2, "ResNet18", "native", "bnn", 20.0),
        Measurement("pi4", 4, "ResNet18", "native", "bnn", 9.0),  # no fp32 at 4: not a cell
    ]
    sizes = [
        ArtifactSize("native", "ResNet18", "fp32", 4000),
        ArtifactSize("native", "ResNet18", "bnn", 500),
        ArtifactSize("native", "VGG-Small", "fp32", 1000),
        ArtifactSize("native", "VGG-Small", "bnn", 100),
        ArtifactSize("native", "ResNet34", "bnn", 100),  # no fp32: not averaged
    ]
    cp = compression_cells(sizes, "native", "bnn")
    assert [(c["arch"], c["compression"]) for c in cp] == [("ResNet18", 8.0), ("VGG-Small", 10.0)]
    (row,) = om_rows(ms, sizes)
    assert row["speedup_cells"] == 2
    assert row["speedup"] == pytest.approx((5.0 + 3.0) / 2)
    assert row["compression"] == pytest.approx(9.0)
    assert row["compression_archs"] == ["ResNet18", "VGG-Small"]
    assert row["om"] == pytest.approx(math.sqrt((4.0**2 + 9.0**2) / 2))


def test_later_measurement_of_a_cell_wins() -> None:
    ms = [
        Measurement("d", 1, "A", "native", "fp32", 10.0),
        Measurement("d", 1, "A", "native", "bnn", 5.0),
        Measurement("d", 1, "A", "native", "bnn", 2.0),  # re-measured later
    ]
    assert latency_table(ms)["rows"][0]["latency_ms"]["native"]["bnn"] == 2.0
    assert om_rows(ms)[0]["speedup"] == pytest.approx(5.0)

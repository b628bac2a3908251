"""Charts (coordinator.plots): the series are the table's numbers, PNG and SVG are real images
whose text names the data, identical data give identical bytes; the API serves them and
``bnnbench plot`` writes the same bytes from the same data read through the API."""

from __future__ import annotations

import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import REPO
from helpers.campaign import Campaign, module_coordinator, run_campaign
from helpers.paper import paper_cells
from typer.testing import CliRunner

from bnnbench import plot_cli
from bnnbench.cli import app
from coordinator import metrics, plots
from coordinator.plots import PlotData, PlotError

SVG_NS = "{http://www.w3.org/2000/svg}"


def _paper_data(devices: tuple[str, ...] = ()) -> PlotData:
    """The paper's Tables 17-20 (``devices`` only, if named), made-up artifact sizes and
    theoretical speedups."""
    ms = paper_cells(devices)
    models, artifacts = [], []
    for i, (arch, algo, theory) in enumerate(
        [("ResNet18", "fp32", 1.0), ("ResNet18", "bnn", 12.6), ("ResNet18", "react", 12.4)], 1
    ):
        models.append(
            {
                "id": i,
                "name": f"r18-{algo}",
                "arch": arch,
                "algorithm": algo,
                "analysis": {"theoretical": {"speedup": theory}},
            }
        )
        for lib, size in (("larq", 46_000_000 if algo == "fp32" else 4_000_000), ("dabnn", 0)):
            artifacts.append(
                {
                    "id": len(artifacts) + 1,
                    "model_id": i,
                    "library": lib,
                    "status": "ready" if size else "failed",
                    "size": size or None,
                }
            )
    sizes = [
        metrics.ArtifactSize("larq", "ResNet18", a, s)
        for a, s in (("fp32", 46_000_000), ("bnn", 4_000_000), ("react", 4_000_000))
    ]
    table = {
        **metrics.latency_table(ms),
        "om": metrics.om_rows(ms, sizes),
        "cells": metrics.long_rows(ms),
    }
    return PlotData(table, models, artifacts)


def _svg_texts(svg: bytes) -> list[str]:
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG_NS}svg"
    return ["".join(t.itertext()) for t in root.iter(f"{SVG_NS}text")]


def _png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    w, h = struct.unpack(">II", png[16:24])
    return w, h


# ------------------------------------------------------------------ series and images


def test_series_are_the_tables_numbers() -> None:
    d = _paper_data()
    lat = plots.latency_series(d)
    assert lat["Kirin 970"]["larq ResNet18 FP32"][0] == (1, 716.427)
    n_points = sum(len(pts) for lines in lat.values() for pts in lines.values())
    assert n_points == len(d.table["cells"])
    sp = plots.speedup_series(d)
    want = metrics.speedup_cells(
        [
            metrics.Measurement(
                c["device"], c["threads"], c["arch"], c["library"], c["algorithm"], c["latency_ms"]
            )
            for c in d.table["cells"]
        ],
        "larq",
        "bnn",
    )
    got = [c for c in sp["Kirin 970"] if (c["library"], c["algorithm"]) == ("larq", "bnn")]
    assert [(c["threads"], c["arch"], c["speedup"]) for c in got] == [
        (c["threads"], c["arch"], c["speedup"]) for c in want if c["device"] == "Kirin 970"
    ]
    # only ready artifacts have a size; the failed daBNN ones are left out
    assert {(r["library"], r["algorithm"]) for r in plots.storage_series(d)} == {
        ("larq", "fp32"),
        ("larq", "bnn"),
        ("larq", "react"),
    }
    th = {(r["arch"], r["algorithm"]): r for r in plots.theoretical_series(d)}
    assert set(th) == {("ResNet18", "bnn"), ("ResNet18", "react")}  # never FP32
    bnn_om = next(o for o in d.table["om"] if (o["library"], o["algorithm"]) == ("larq", "bnn"))
    r18 = [c["speedup"] for c in bnn_om["cells"] if c["arch"] == "ResNet18"]
    assert th[("ResNet18", "bnn")]["theoretical"] == 12.6
    assert th[("ResNet18", "bnn")]["measured"]["larq"] == pytest.approx(sum(r18) / len(r18))


@pytest.mark.parametrize("kind", list(plots.KINDS))
def test_render_png_and_svg(kind: str) -> None:
    d = _paper_data(("Kirin 970", "Raspberrypi 4B"))  # two panels: drawing 16 takes seconds
    png = plots.render(kind, d, "png")
    w, h = _png_size(png)
    assert w >= 600 and h >= 300
    svg = plots.render(kind, d, "svg")
    texts = _svg_texts(svg)
    assert plots.KINDS[kind] in texts  # the title, as text (svg.fonttype none)
    expected = {
        "latency": ["Kirin 970", "larq ResNet18 FP32", "threads"],
        "speedup": ["Kirin 970", "larq BNN", "dabnn BNN"],
        "storage": ["ResNet18", "larq FP32", "larq BNN"],
        "theoretical": ["theoretical", "measured: larq", "ResNet18 BNN", "12.60"],
    }[kind]
    for text in expected:
        assert text in texts, (text, texts[:40])
    # same data, same bytes: drawn again (not from the cache)
    assert plots._draw(kind, d, "svg") == svg and plots._draw(kind, d, "png") == png


def test_no_data_draws_a_placeholder_and_bad_names_are_refused() -> None:
    empty = PlotData({"columns": [], "rows": [], "om": [], "cells": []})
    for kind in plots.KINDS:
        assert "no data yet" in _svg_texts(plots.render(kind, empty, "svg"))
    with pytest.raises(PlotError, match="unknown plot kind 'pie'; one of: latency"):
        plots.render("pie", empty, "png")
    with pytest.raises(PlotError, match="unknown plot format 'gif'"):
        plots.render("latency", empty, "gif")
    assert tuple(plots.KINDS) == plot_cli.KINDS  # the CLI's copy (it must not import us)


@pytest.mark.slow  # a fresh interpreter importing the coordinator
def test_matplotlib_is_imported_only_to_draw() -> None:
    code = (
        "import sys, coordinator.plots, coordinator.app, bnnbench.cli\n"
        "assert 'matplotlib' not in sys.modules, 'imported eagerly'\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)


# ------------------------------------------------------------------ API and CLI


@pytest.fixture(scope="module")
def campaign(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Campaign]:
    with module_coordinator(tmp_path_factory, "plots-admin-token-5b1d", conversion_workers=2) as c:
        yield run_campaign(c, tmp_path_factory.mktemp("models"))


def test_api_serves_the_charts(campaign: Campaign) -> None:
    c = campaign.c
    hdr = {"Authorization": f"Bearer {c.admin_token}"}
    r = httpx.get(f"{c.url}/api/v1/results/plots/latency.svg", headers=hdr)
    assert r.status_code == 200 and r.headers["content-type"] == "image/svg+xml"
    texts = _svg_texts(r.content)
    assert "BCM2711" in texts and "native TinyVGG FP32" in texts and "native TinyVGG BNN" in texts
    r = httpx.get(f"{c.url}/api/v1/results/plots/speedup.png", headers=hdr)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    _png_size(r.content)
    # the theoretical bar is the model analysis' number, the measured one the table's
    th = campaign.models["bnn"].analysis["theoretical"]["speedup"]  # type: ignore[index]
    texts = _svg_texts(c.client.plot("theoretical", "svg"))
    assert f"{th:.2f}" in texts and "measured: native" in texts
    [om] = c.client.table()["om"]
    assert f"{om['speedup']:.2f}" in texts
    assert httpx.get(f"{c.url}/api/v1/results/plots/latency.svg").status_code == 401
    bad = httpx.get(f"{c.url}/api/v1/results/plots/pie.svg", headers=hdr)
    assert bad.status_code == 422 and "kind" in bad.json()["detail"]
    assert httpx.get(f"{c.url}/api/v1/results/plots/latency.gif", headers=hdr).status_code == 422


def test_cli_writes_the_same_chart_as_the_api(campaign: Campaign, tmp_path: Path) -> None:
    c = campaign.c
    runner = CliRunner()
    env = {"BNNBENCH_COORDINATOR": c.url, "BNNBENCH_TOKEN": c.admin_token}
    for kind, fmt, name in (("latency", "svg", "lat.svg"), ("storage", None, "storage.png")):
        out = tmp_path / name
        args = ["plot", kind, "--output", str(out)] + (["--format", fmt] if fmt else [])
        res = runner.invoke(app, args, env=env)
        assert res.exit_code == 0, res.output
        assert out.read_bytes() == c.client.plot(kind, fmt or "png")  # the suffix chose png
    res = runner.invoke(app, ["plot", "pie"], env=env)
    assert res.exit_code == 2 and "unknown kind 'pie'" in res.output
    res = runner.invoke(
        app, ["plot", "latency", "-o", str(tmp_path / "x.svg"), "--token", "bad"], env=env
    )
    assert res.exit_code == 2 and "invalid token" in res.output
    assert not (tmp_path / "x.svg").exists()

"""The table renderers (coordinator/exports.py) on the paper's reference fleet and on names
full of LaTeX/Markdown specials; ``bnnbench results --reference-only`` writes them with no
coordinator at all."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from bnnbench import client_cli
from coordinator import exports, metrics, reference
from coordinator.metrics import ArtifactSize, Measurement

LIB = {"lce": "Larq", "dabnn": "daBNN"}


@pytest.fixture(scope="module")
def paper() -> dict[str, Any]:
    return reference.table()


def _csv_cells() -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(reference.read_text(reference.HARDWARE_CSV))))


def _paper_value_columns() -> list[tuple[str, str]]:
    return [
        ("larq", "fp32"),
        ("larq", "bnn"),
        ("larq", "react"),
        ("dabnn", "fp32"),
        ("dabnn", "bnn"),
    ]


def test_markdown_holds_every_paper_cell(paper: dict[str, Any]) -> None:
    md = exports.to_markdown(paper)
    lines = md.splitlines()
    head = next(x for x in lines if x.startswith("| Hardware |"))
    assert [c.strip() for c in head.strip("|").split("|")] == [
        "Hardware",
        "Threads",
        "Arch.",
        "Larq FP32",
        "Larq BNN",
        "Larq ReAct",
        "daBNN FP32",
        "daBNN BNN",
    ]
    rows = {}
    for x in lines[lines.index(head) + 2 :]:
        if not x.startswith("|"):
            break
        cells = [c.strip() for c in x.strip("|").split("|")]
        rows[(cells[0], cells[1], cells[2])] = dict(
            zip(_paper_value_columns(), cells[3:], strict=True)
        )
    for c in _csv_cells():
        row = rows[(c["device"] + " (paper)", c["threads"], c["arch"])]
        assert float(row[(c["library"], c["algorithm"])]) == float(c["latency_ms"]), c
    assert sum(v != "–" for r in rows.values() for v in r.values()) == len(_csv_cells())
    # the paper's OM and Table 3, with the averaging stated
    assert "plain mean over 174 cells" in md
    assert "| bnn | 5.45 | 5.53 | 15.62 | 11.70 | 11.70 | 11.72 |" in md
    assert "| react | 4.89 | 5.06 | 15.52 | 11.51 | 11.51 | 11.54 |" in md
    assert "Cells left out: none." in md


def _tabular_rows(tex: str, nth: int = 0) -> tuple[int, list[str]]:
    """Column count and the body lines of the ``nth`` tabular."""
    lines = tex.splitlines()
    i = [i for i, x in enumerate(lines) if x.startswith(r"\begin{tabular}")][nth]
    spec = re.match(r"\\begin\{tabular\}\{(\w+)\}", lines[i])
    assert spec
    end = lines.index(r"\end{tabular}", i)
    return len(spec.group(1)), lines[i + 1 : end]


def _unescaped_amps(line: str) -> int:
    return len(re.findall(r"(?<!\\)&", line))


def test_latex_is_the_papers_layout(paper: dict[str, Any]) -> None:
    tex = exports.to_latex(paper)
    n, body = _tabular_rows(tex)
    assert n == 8 and r"\begin{tabular}{lclrrrrr}" in tex
    assert body[:4] == [
        r"\toprule",
        r"Hardware & Threads & Arch. & \multicolumn{3}{c}{Larq} & \multicolumn{2}{c}{daBNN} \\",
        r"\cmidrule(lr){4-6} \cmidrule(lr){7-8}",
        r" & & & FP32 & BNN & ReAct & FP32 & BNN \\",
    ]
    assert body[-1] == r"\bottomrule"
    data = [x for x in body[5:-1] if x != r"\midrule"]
    assert len(data) == len(paper["rows"])
    for x in data:  # every row: 8 columns, ended
        assert _unescaped_amps(x) == n - 1 and x.endswith(r"\\"), x
    # a device's name once (its first row), a thread count once per device
    first = data[0].split(" & ")
    assert first[:3] == ["Apple M1 (paper)", "1", "ResNet18"]
    assert data[1].split(" & ")[:3] == ["", "", "ResNet34"]
    assert data[3].split(" & ")[:3] == ["", "2", "ResNet18"]
    assert tex.count("Kirin 970 (paper)") == 1
    assert body.count(r"\midrule") == 1 + 13  # under the header, then between the 14 devices
    # every cell, 3 decimals; missing ones as an en dash
    text = "\n".join(data)
    for c in _csv_cells():
        assert f"{float(c['latency_ms']):.3f}" in text
    kirin = next(x for x in data if x.startswith("Kirin 970 (paper)"))
    assert kirin.split(" & ")[3:] == ["716.427", "123.263", "126.457", "427.585", r"72.585 \\"]
    assert " -- " in text  # VGG-Small has no daBNN cells
    assert "% definitions: speedup = t_fp32 / t_bin" in tex


NASTY = "lab_pi #2 & 50% {x} ~$^\\"


def _nasty_table() -> dict[str, Any]:
    ms = [
        Measurement(NASTY, 1, "Res_Net", "lce", "fp32", 100.0, device_id=1),
        Measurement(NASTY, 1, "Res_Net", "lce", "bnn", 20.0, device_id=1),
        Measurement(NASTY, 2, "Res_Net", "lce", "bnn", 10.0, device_id=1),  # no fp32
    ]
    sizes = [
        ArtifactSize("lce", "Res_Net", "fp32", 3200),
        ArtifactSize("lce", "Res_Net", "bnn", 200),
    ]
    return {
        **metrics.latency_table(ms),
        "unit": "ms (median)",
        "averaging": metrics.AVERAGING,
        "om": metrics.om_rows(ms, sizes),
        "cells": metrics.long_rows(ms),
    }


def test_latex_escapes_specials() -> None:
    tex = exports.to_latex(_nasty_table())
    escaped = r"lab\_pi \#2 \& 50\% \{x\} \textasciitilde{}\$\textasciicircum{}\textbackslash{}"
    assert exports.latex_escape(NASTY) == escaped
    assert escaped in tex
    # raw only inside % comments (TeX drops the rest of such a line, specials included)
    assert all(NASTY not in x for x in tex.splitlines() if not x.startswith("%"))
    n, body = _tabular_rows(tex)
    for x in body[4:]:
        if x.endswith(r"\\"):
            assert _unescaped_amps(x) == n - 1, x
    assert r"Res\_Net" in tex
    # the OM tabular: speedup 5.00 (1 cell), compression 16.00; the left-out cell in a comment
    n_om, om_body = _tabular_rows(tex, 1)
    assert om_body[3].split(" & ")[:3] == ["Larq", "BNN", "5.00"]
    assert all(_unescaped_amps(x) == n_om - 1 for x in om_body if x.endswith(r"\\"))
    left = [x for x in tex.splitlines() if x.startswith("% left out:")]
    assert left == [f"% left out: Larq: bnn measured, fp32 missing on {NASTY}, 2 threads, Res_Net"]


def test_markdown_escapes_pipes() -> None:
    data = _nasty_table()
    data["rows"][0]["device"] = "a|b"
    md = exports.to_markdown(data)
    assert "| a\\|b | 1 | Res_Net | 100.000 | 20.000 |" in md
    assert "- Larq: bnn measured, fp32 missing on" in md


def test_csv_round_trips_the_reference(paper: dict[str, Any]) -> None:
    rows = list(csv.DictReader(io.StringIO(exports.to_csv(paper))))
    assert list(rows[0]) == exports.CSV_COLUMNS
    back = {v: k for k, v in reference.LIBRARIES.items()}
    got = {
        (
            r["device"].removesuffix(" (paper)"),
            r["threads"],
            r["arch"],
            back[r["library"]],
            r["algorithm"],
            float(r["latency_ms"]),
        )
        for r in rows
    }
    want = {
        (c["device"], c["threads"], c["arch"], c["library"], c["algorithm"], float(c["latency_ms"]))
        for c in _csv_cells()
    }
    assert got == want and len(rows) == len(want)
    assert {r["source"] for r in rows} == {"paper"}


def test_render_dispatch(paper: dict[str, Any]) -> None:
    assert json.loads(exports.render(paper, "json")) == paper
    for fmt in exports.FORMATS:
        assert exports.render(paper, fmt)
    with pytest.raises(ValueError, match="unknown format 'html'"):
        exports.render(paper, "html")


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.command("results")(client_cli.results)
    app.command("noop")(lambda: None)  # two commands: `results` stays a subcommand
    return app


def test_cli_reference_only_needs_no_coordinator(paper: dict[str, Any], tmp_path: Path) -> None:
    runner = CliRunner()
    # an unreachable coordinator in the environment: --reference-only never asks it
    env = {"BNNBENCH_COORDINATOR": "http://127.0.0.1:9", "COLUMNS": "250"}
    for fmt in exports.FORMATS:
        out = runner.invoke(_cli(), ["results", "--reference-only", "-f", fmt], env=env)
        assert out.exit_code == 0, out.output
        assert out.stdout == exports.render(paper, fmt)
    dest = tmp_path / "paper.tex"
    out = runner.invoke(
        _cli(), ["results", "--reference-only", "-f", "latex", "-o", str(dest)], env=env
    )
    assert out.exit_code == 0 and out.stdout == ""
    assert dest.read_text() == exports.to_latex(paper)
    out = runner.invoke(_cli(), ["results", "--reference-only"], env=env)
    assert out.exit_code == 0, out.output
    for text in ("Raspberrypi 4B (paper)", "Larq", "daBNN", "ReAct", "Table 3", "5.53", "4.89"):
        assert text in out.stdout, text
    out = runner.invoke(_cli(), ["results", "--reference-only", "-f", "html"], env=env)
    assert out.exit_code != 0 and "--format" in out.output

"""``bnnbench plot KIND``: a chart of the hardware track as PNG or SVG.

The data come through the REST API (the table, the models' analyses, the artifacts' sizes)
and are drawn here by ``coordinator.plots``, the code behind ``GET /results/plots/...``: the
same data give the same bytes. Without matplotlib on this machine the coordinator draws it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import typer
from rich.console import Console

from bnnbench.client import BnnbenchClient
from bnnbench.client_cli import TOKEN_FILE_HELP, client_from_options
from bnnbench.http import ApiError

KINDS = ("latency", "speedup", "storage", "theoretical")  # coordinator.plots.KINDS
FORMATS = ("png", "svg")


def plot(
    kind: str = typer.Argument(
        ...,
        help="latency (vs threads per device and library) | speedup (per device) | storage "
        "(artifact size per format) | theoretical (vs measured speedup)",
    ),
    format: str | None = typer.Option(
        None, "--format", "-f", help="png | svg [from the --output suffix, else png]"
    ),
    output: Path | None = typer.Option(None, "--output", "-o", help="file to write [KIND.FORMAT]"),
    coordinator: str | None = typer.Option(None, help="coordinator URL [BNNBENCH_COORDINATOR]"),
    token: str | None = typer.Option(None, help="admin token [BNNBENCH_TOKEN]"),
    token_file: Path | None = typer.Option(None, help=TOKEN_FILE_HELP),
) -> None:
    """Draw a chart of the results (the numbers of `bnnbench results`) to a PNG or SVG file."""
    if kind not in KINDS:
        raise typer.BadParameter(f"unknown kind {kind!r}; one of: {', '.join(KINDS)}")
    fmt = format or (output.suffix.lstrip(".").lower() if output is not None else "") or "png"
    if fmt not in FORMATS:
        raise typer.BadParameter(f"--format must be png or svg, got {fmt!r}")
    out = output or Path(f"{kind}.{fmt}")
    err = Console(stderr=True)
    with client_from_options(coordinator, token, token_file) as c:
        try:
            data = _draw_here(c, kind, fmt)
            if data is None:
                err.print("[dim]matplotlib is not installed here: the coordinator draws it[/dim]")
                data = c.plot(kind, fmt)
        except ApiError as exc:
            http = f" (HTTP {exc.status_code})" if exc.status_code else ""
            err.print(f"[red]error:[/red] {exc.detail}{http}")
            raise typer.Exit(2) from None
    out.write_bytes(data)
    err.print(f"{kind} chart written to {out} ({len(data)} bytes, {fmt})")


def _draw_here(c: BnnbenchClient, kind: str, fmt: str) -> bytes | None:
    if importlib.util.find_spec("matplotlib") is None:
        return None
    from coordinator.plots import PlotData, render

    data = PlotData(
        table=c.table(),
        models=[m.model_dump(mode="json") for m in c.list_models()],
        artifacts=[a.model_dump(mode="json") for a in c.list_artifacts()],
    )
    return render(kind, data, fmt)

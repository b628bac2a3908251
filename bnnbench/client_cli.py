"""``bnnbench submit`` and ``bnnbench results``: the user's side of the coordinator.

Coordinator URL and token default to BNNBENCH_COORDINATOR and BNNBENCH_TOKEN (the server's
admin token).
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bnnbench.client import BnnbenchClient
from bnnbench.http import ApiError
from bnnbench.schemas import JobOut, Library
from bnnbench.settings import ClientSettings

ALGO_LABELS = {"fp32": "FP32", "bnn": "BNN", "react": "ReAct"}


def _client(coordinator: str | None, token: str | None) -> BnnbenchClient:
    cfg = ClientSettings()
    return BnnbenchClient(coordinator or cfg.coordinator, token if token is not None else cfg.token)


def _model_files(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted(q for q in p.glob("*.onnx") if q.is_file())
            if not found:
                raise typer.BadParameter(f"{p}: directory holds no .onnx files")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise typer.BadParameter(f"{p}: no such file or directory")
    return files


def submit(
    paths: list[Path] = typer.Argument(..., help="ONNX files, or directories (every *.onnx)"),
    coordinator: str | None = typer.Option(None, help="coordinator URL [BNNBENCH_COORDINATOR]"),
    token: str | None = typer.Option(None, help="admin token [BNNBENCH_TOKEN]"),
    library: list[Library] = typer.Option(
        [Library.native], help="inference library (repeatable)"
    ),
    threads: list[int] = typer.Option([1], help="thread count (repeatable: one job each)"),
    runs: int = typer.Option(10, help="timed runs per job"),
    warmup: int = typer.Option(3, help="warm-up runs per job"),
    device_id: int | None = typer.Option(None, help="only this device may run the jobs"),
    arch: str | None = typer.Option(None, help="architecture label for all files"),
    algorithm: str | None = typer.Option(None, help="fp32 / bnn / react label for all files"),
    wait: bool = typer.Option(False, "--wait", help="follow the jobs until done or failed"),
    timeout: float | None = typer.Option(None, help="with --wait: give up after this many s"),
) -> None:
    """Upload models and queue benchmark jobs (one per model × library × thread count)."""
    console = Console(stderr=True)
    files = _model_files(paths)
    jobs: list[JobOut] = []
    names: dict[int, str] = {}
    with _client(coordinator, token) as client:
        try:
            for f in files:
                m = client.upload_model(f, arch=arch, algorithm=algorithm)
                names[m.id] = m.name
                for lib in library:
                    created = client.create_jobs(
                        m.id, lib.value, threads, device_id=device_id, warmup=warmup, runs=runs
                    )
                    jobs += created
                    console.print(
                        f"{f.name}: model {m.id} ({m.sha256[:12]}), {lib.value}: jobs "
                        + ", ".join(str(j.id) for j in created)
                    )
            if not wait:
                return
            final = _follow(client, jobs, console, timeout)
        except ApiError as exc:
            console.print(_error_line(exc))
            raise typer.Exit(2) from None
        except TimeoutError as exc:
            console.print(f"[red]timeout:[/red] {exc}")
            raise typer.Exit(3) from None
    counts = Counter(j.status.value for j in final)
    console.print(f"{counts.get('done', 0)} done, {counts.get('failed', 0)} failed")
    failed = [j for j in final if j.status == "failed"]
    for j in failed:
        console.print(
            f"[red]job {j.id}[/red] ({names.get(j.model_id, j.model_id)}, {j.library.value}, "
            f"{j.threads} threads): {j.error}"
        )
    if failed:
        raise typer.Exit(1)


def _follow(
    client: BnnbenchClient, jobs: list[JobOut], console: Console, timeout: float | None
) -> list[JobOut]:
    with Progress(
        TextColumn("[bold]jobs"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.description}"), TimeElapsedColumn(), console=console,
    ) as progress:
        task = progress.add_task("", total=len(jobs))

        def update(current: list[JobOut]) -> None:
            c = Counter(j.status.value for j in current)
            progress.update(
                task,
                completed=c.get("done", 0) + c.get("failed", 0),
                description=" ".join(f"{k} {c[k]}" for k in
                                     ("waiting", "queued", "leased", "done", "failed") if c[k]),
            )

        return client.wait_jobs([j.id for j in jobs], timeout=timeout, on_update=update)


def results(
    coordinator: str | None = typer.Option(None, help="coordinator URL [BNNBENCH_COORDINATOR]"),
    token: str | None = typer.Option(None, help="admin token [BNNBENCH_TOKEN]"),
    format: str = typer.Option("table", "--format", "-f", help="table | csv | json"),
) -> None:
    """The hardware-track table (Tables 17–20 layout: median latency in ms) and OM rows."""
    if format not in ("table", "csv", "json"):
        raise typer.BadParameter("--format must be table, csv or json")
    with _client(coordinator, token) as client:
        try:
            if format == "csv":
                sys.stdout.write(client.table_csv())
                return
            data = client.table()
        except ApiError as exc:
            Console(stderr=True).print(_error_line(exc))
            raise typer.Exit(2) from None
    if format == "json":
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return
    # piped output (make demo, logs) has no terminal width: don't squeeze the table to 80 cols
    console = Console() if sys.stdout.isatty() else Console(width=160)
    if not data["rows"]:
        console.print("no valid results yet")
        return
    console.print(latency_rich_table(data))
    console.print(om_rich_table(data))
    for o in data["om"]:
        console.print(f"[dim]{o['library']} {o['algorithm']}: {o['averaging']}[/dim]")


def _fmt(v: Any, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def latency_rich_table(data: dict[str, Any]) -> Table:
    t = Table(title="Hardware inference: median latency (ms)")
    t.add_column("Hardware")
    t.add_column("Threads", justify="right")
    t.add_column("Arch.")
    cols = [(c["library"], a) for c in data["columns"] for a in c["algorithms"]]
    for lib, algo in cols:
        t.add_column(f"{lib}\n{ALGO_LABELS.get(algo, algo)}", justify="right")
    for r in data["rows"]:
        t.add_row(
            r["device"], str(r["threads"]), r["arch"],
            *(_fmt(r["latency_ms"].get(lib, {}).get(algo)) for lib, algo in cols),
        )
    return t


def om_rich_table(data: dict[str, Any]) -> Table:
    t = Table(title="Hardware track: speedup, compression, OM")
    for name, justify in (("Library", "left"), ("Algorithm", "left"), ("Speedup", "right"),
                          ("cells", "right"), ("Compression", "right"), ("archs", "left"),
                          ("OM", "right")):
        t.add_column(name, justify=justify)  # type: ignore[arg-type]
    for o in data["om"]:
        t.add_row(
            o["library"], ALGO_LABELS.get(o["algorithm"], o["algorithm"]),
            _fmt(o["speedup"], 2), str(o["speedup_cells"]), _fmt(o["compression"], 2),
            ", ".join(o["compression_archs"]), _fmt(o["om"], 2),
        )
    return t


def _error_line(exc: ApiError) -> str:
    http = f" (HTTP {exc.status_code})" if exc.status_code else ""
    return f"[red]error:[/red] {exc.detail}{http}"

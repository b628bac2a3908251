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
from bnnbench.schemas import DeviceOut, JobOut, Library, MeasurementProtocol
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
    library: list[Library] = typer.Option([Library.native], help="inference library (repeatable)"),
    threads: list[int] = typer.Option([1], help="thread count (repeatable: one job each)"),
    runs: int = typer.Option(10, help="timed runs per job"),
    warmup: int = typer.Option(3, help="warm-up runs per job"),
    device_id: int | None = typer.Option(None, help="only this device may run the jobs"),
    device: list[str] = typer.Option(
        [],
        "--device",
        "-d",
        help="device selector, repeatable: an id, a name, 'all', or key=value[,key=value] on "
        "probed attributes (soc=SM8250, abi=arm64-v8a, transport=ssh, emulated=false); "
        "one job per matching device and thread count",
    ),
    warmup_ms: float = typer.Option(0.0, help="warm-up lasts at least this long (ms)"),
    min_time_ms: float = typer.Option(0.0, help="timed runs last at least this long (ms)"),
    max_runs: int | None = typer.Option(None, help="cap on timed runs with --min-time-ms"),
    cooldown: float = typer.Option(0.0, help="seconds the device idles before each job"),
    affinity: str | None = typer.Option(
        None, help="big (fastest cluster; default on phones), all, or a CPU list like 4-7"
    ),
    arch: str | None = typer.Option(None, help="architecture label for all files"),
    algorithm: str | None = typer.Option(None, help="fp32 / bnn / react label for all files"),
    wait: bool = typer.Option(False, "--wait", help="follow the jobs until done or failed"),
    timeout: float | None = typer.Option(None, help="with --wait: give up after this many s"),
) -> None:
    """Upload models and queue benchmark jobs (one per model × library × thread count)."""
    console = Console(stderr=True)
    files = _model_files(paths)
    try:
        protocol = MeasurementProtocol(
            warmup_ms=warmup_ms,
            min_time_ms=min_time_ms,
            max_runs=max_runs,
            cooldown_s=cooldown,
            affinity=affinity,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    jobs: list[JobOut] = []
    names: dict[int, str] = {}
    with _client(coordinator, token) as client:
        try:
            for f in files:
                m = client.upload_model(f, arch=arch, algorithm=algorithm)
                names[m.id] = m.name
                for lib in library:
                    created = client.create_jobs(
                        m.id,
                        lib.value,
                        threads,
                        device_id=device_id,
                        devices=device or None,
                        warmup=warmup,
                        runs=runs,
                        protocol=protocol,
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
        TextColumn("[bold]jobs"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("", total=len(jobs))

        def update(current: list[JobOut]) -> None:
            c = Counter(j.status.value for j in current)
            progress.update(
                task,
                completed=c.get("done", 0) + c.get("failed", 0),
                description=" ".join(
                    f"{k} {c[k]}" for k in ("waiting", "queued", "leased", "done", "failed") if c[k]
                ),
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
            r["device"],
            str(r["threads"]),
            r["arch"],
            *(_fmt(r["latency_ms"].get(lib, {}).get(algo)) for lib, algo in cols),
        )
    return t


def om_rich_table(data: dict[str, Any]) -> Table:
    t = Table(title="Hardware track: speedup, compression, OM")
    for name, justify in (
        ("Library", "left"),
        ("Algorithm", "left"),
        ("Speedup", "right"),
        ("cells", "right"),
        ("Compression", "right"),
        ("archs", "left"),
        ("OM", "right"),
    ):
        t.add_column(name, justify=justify)  # type: ignore[arg-type]
    for o in data["om"]:
        t.add_row(
            o["library"],
            ALGO_LABELS.get(o["algorithm"], o["algorithm"]),
            _fmt(o["speedup"], 2),
            str(o["speedup_cells"]),
            _fmt(o["compression"], 2),
            ", ".join(o["compression_archs"]),
            _fmt(o["om"], 2),
        )
    return t


def _error_line(exc: ApiError) -> str:
    http = f" (HTTP {exc.status_code})" if exc.status_code else ""
    return f"[red]error:[/red] {exc.detail}{http}"


# ------------------------------------------------------------------ devices


def devices_list(
    coordinator: str | None = typer.Option(None, help="coordinator URL [BNNBENCH_COORDINATOR]"),
    token: str | None = typer.Option(None, help="admin token [BNNBENCH_TOKEN]"),
    json_out: bool = typer.Option(False, "--json", help="print the devices as JSON"),
) -> None:
    """The fleet: every registered device with its probed attributes and live status."""
    with _client(coordinator, token) as client:
        try:
            devs = client.devices()
        except ApiError as exc:
            Console(stderr=True).print(_error_line(exc))
            raise typer.Exit(2) from None
    if json_out:
        sys.stdout.write(json.dumps([d.model_dump(mode="json") for d in devs], indent=2) + "\n")
        return
    console = Console() if sys.stdout.isatty() else Console(width=200)
    if not devs:
        console.print("no devices registered yet (start an agent: bnnbench agent)")
        return
    console.print(devices_rich_table(devs))


def clusters_text(attrs: dict[str, Any]) -> str:
    parts = []
    for c in attrs.get("clusters") or []:
        mhz = f" {c['max_freq_khz'] / 1e6:.2f} GHz" if c.get("max_freq_khz") else ""
        parts.append(f"{len(c['cpus'])}x{(' ' + c['core']) if c.get('core') else ''}{mhz}")
    return " + ".join(parts)


def devices_rich_table(devs: list[DeviceOut]) -> Table:
    t = Table(title="Devices")
    for col in (
        "id",
        "device",
        "status",
        "transport",
        "SoC / board",
        "ABI",
        "cores",
        "clusters",
        "RAM",
        "governor",
        "fingerprint",
    ):
        t.add_column(col)
    for d in devs:
        a = d.attributes
        status = ("busy" if d.busy else "online") if d.online else "offline"
        if d.emulated:
            status += " (emulated)"
        soc = " / ".join(x for x in (a.get("soc"), a.get("board")) if x) or d.cpu_model
        ram = f"{a['ram_mb'] / 1024:.1f} GiB" if a.get("ram_mb") else "–"
        t.add_row(
            str(d.id),
            d.label,
            status,
            d.transport,
            soc,
            a.get("abi") or d.arch,
            str(d.cores),
            clusters_text(a) or "–",
            ram,
            a.get("governor") or "–",
            d.fingerprint,
        )
    return t

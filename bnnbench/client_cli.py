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
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bnnbench.client import BnnbenchClient
from bnnbench.http import ApiError
from bnnbench.schemas import DeviceOut, JobOut, Library, MeasurementProtocol
from bnnbench.settings import ClientSettings
from bnnbench.tokenfile import client_token

TOKEN_FILE_HELP = "file holding the admin token, instead of --token [BNNBENCH_TOKEN_FILE]"


def client_from_options(
    coordinator: str | None, token: str | None, token_file: Path | None = None
) -> BnnbenchClient:
    """A client for the command's options, else BNNBENCH_COORDINATOR and BNNBENCH_TOKEN /
    BNNBENCH_TOKEN_FILE; a token file that cannot be used ends the command with exit 2."""
    cfg = ClientSettings()
    try:
        tok = client_token(token, token_file, cfg.token, cfg.token_file)
    except ValueError as exc:  # TokenFileError too
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    return BnnbenchClient(coordinator or cfg.coordinator, tok)


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
    token_file: Path | None = typer.Option(None, help=TOKEN_FILE_HELP),
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
    with client_from_options(coordinator, token, token_file) as client:
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


RESULT_FORMATS = ("table", "json", "csv", "markdown", "latex")


def results(
    coordinator: str | None = typer.Option(None, help="coordinator URL [BNNBENCH_COORDINATOR]"),
    token: str | None = typer.Option(None, help="admin token [BNNBENCH_TOKEN]"),
    token_file: Path | None = typer.Option(None, help=TOKEN_FILE_HELP),
    format: str = typer.Option(
        "table", "--format", "-f", help="table | json | csv | markdown | latex"
    ),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="write to this file instead of stdout"
    ),
    db: Path | None = typer.Option(
        None,
        "--db",
        help="read a coordinator's SQLite database file directly, read-only (no coordinator "
        "running; --coordinator and --token are not used)",
    ),
    reference: bool = typer.Option(
        False,
        "--reference",
        help="add the BiBench paper's reference fleet: its Tables 17-20 rows, labelled "
        "'(paper)', its speedups and OM recomputed from its cells, and its Table 3",
    ),
    reference_only: bool = typer.Option(
        False,
        "--reference-only",
        help="the paper's reference fleet alone (no coordinator or database needed)",
    ),
) -> None:
    """The hardware-track table (Tables 17–20 layout: median latency in ms) and OM rows, per
    variant and over the cells common to all variants, with the averaging stated."""
    if format not in RESULT_FORMATS:
        raise typer.BadParameter(f"--format must be one of {', '.join(RESULT_FORMATS)}")
    if reference_only and db is not None:
        raise typer.BadParameter("--reference-only reads no database: drop --db")
    err = Console(stderr=True)
    data: dict[str, Any] | None = None
    text: str | None = None
    if reference_only or db is not None:
        # computed here, with the coordinator's own code: nothing to ask a server
        from coordinator import exports
        from coordinator import reference as paper

        data = paper.table() if db is None else _read_db(db, reference, err)
        if format != "table":
            text = exports.render(data, format)
    else:
        with client_from_options(coordinator, token, token_file) as client:
            try:
                if format == "csv":
                    text = client.table_csv(reference)
                elif format == "markdown":
                    text = client.table_markdown(reference)
                elif format == "latex":
                    text = client.table_latex(reference)
                else:
                    data = client.table(reference)
                    if format == "json":
                        text = json.dumps(data, indent=2) + "\n"
            except ApiError as exc:
                err.print(_error_line(exc))
                raise typer.Exit(2) from None
    if text is not None:
        if output is None:
            sys.stdout.write(text)
        else:
            output.write_text(text, encoding="utf-8")
        return
    assert data is not None
    if output is None:
        # piped output (make demo, logs) has no terminal width: don't squeeze the table
        print_results(Console() if sys.stdout.isatty() else Console(width=160), data)
    else:
        with output.open("w", encoding="utf-8") as f:
            print_results(Console(file=f, width=200, color_system=None), data)


def _read_db(db: Path, reference: bool, err: Console) -> dict[str, Any]:
    try:
        from coordinator import results as db_results  # SQLAlchemy: the coordinator extra
    except ImportError as exc:
        err.print(f"[red]error:[/red] --db needs bnnbench[coordinator] installed ({exc})")
        raise typer.Exit(2) from None
    try:
        return db_results.read_table(db, reference)
    except db_results.DatabaseError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


def print_results(console: Console, data: dict[str, Any]) -> None:
    """The table format: latency table, OM tables (this fleet's, the paper's), the averaging
    and the cells left out, Table 3 against the paper's cells."""
    from coordinator.exports import averaging_lines, excluded_lines

    if not data["rows"]:
        console.print("no valid results yet")
        return
    console.print(latency_rich_table(data))
    ref = data.get("reference")
    sections = [("Hardware track: speedup, compression, OM", data["om"])] if data["om"] else []
    if ref:
        sections.append(("The paper's cells: speedup and OM (this tool's averaging)", ref["om"]))
    for title, om in sections:
        console.print(om_rich_table(om, title))
        for line in averaging_lines(om):
            console.print(f"[dim]{escape(line)}[/dim]")
        for line in excluded_lines(om):
            console.print(f"[yellow]left out:[/yellow] {escape(line)}")
    if ref:
        console.print(table3_rich_table(ref["table3"]))
        console.print(f"[dim]{escape(ref['note'])}[/dim]")
    console.print(f"[dim]{escape(data.get('averaging', ''))}[/dim]")


def _fmt(v: Any, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def latency_rich_table(data: dict[str, Any]) -> Table:
    from coordinator.metrics import algorithm_label, library_label

    t = Table(title="Hardware inference: median latency (ms)")
    t.add_column("Hardware")
    t.add_column("Threads", justify="right")
    t.add_column("Arch.")
    cols = [(c["library"], a) for c in data["columns"] for a in c["algorithms"]]
    for lib, algo in cols:
        t.add_column(f"{library_label(lib)}\n{algorithm_label(algo)}", justify="right")
    for r in data["rows"]:
        t.add_row(
            escape(r["device"]),
            str(r["threads"]),
            escape(r["arch"]),
            *(_fmt(r["latency_ms"].get(lib, {}).get(algo)) for lib, algo in cols),
            style="dim" if r.get("source") == "paper" else None,
        )
    return t


def om_rich_table(om: list[dict[str, Any]], title: str) -> Table:
    from coordinator.exports import om_table

    head, body = om_table(om)
    t = Table(title=title)
    for i, name in enumerate(head):
        t.add_column(name, justify="left" if i < 2 or name == "archs" else "right")
    for row in body:
        t.add_row(*row)
    return t


def table3_rich_table(rows: list[dict[str, Any]]) -> Table:
    from coordinator.exports import table3_table

    head, body = table3_table(rows)
    t = Table(title="The paper's Table 3 against its Tables 17–20 cells")
    for i, name in enumerate(head):
        t.add_column(name, justify="left" if i < 1 else "right")
    for row in body:
        t.add_row(*row)
    return t


def _error_line(exc: ApiError) -> str:
    http = f" (HTTP {exc.status_code})" if exc.status_code else ""
    return f"[red]error:[/red] {exc.detail}{http}"


# ------------------------------------------------------------------ devices


def devices_list(
    coordinator: str | None = typer.Option(None, help="coordinator URL [BNNBENCH_COORDINATOR]"),
    token: str | None = typer.Option(None, help="admin token [BNNBENCH_TOKEN]"),
    token_file: Path | None = typer.Option(None, help=TOKEN_FILE_HELP),
    json_out: bool = typer.Option(False, "--json", help="print the devices as JSON"),
) -> None:
    """The fleet: every registered device with its probed attributes and live status."""
    with client_from_options(coordinator, token, token_file) as client:
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

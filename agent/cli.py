"""``bnnbench agent`` (the daemon) and ``bnnbench run`` (one local benchmark, no coordinator).

Only light imports at module level: this module is loaded by every ``bnnbench`` invocation.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import typer

MAX_THREADS = 16


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if level.lower() != "debug":  # one line per heartbeat would drown the agent's own log
        logging.getLogger("httpx").setLevel(logging.WARNING)


def agent(
    coordinator: str | None = typer.Option(
        None, help="Coordinator URL [env BNNBENCH_AGENT_COORDINATOR]"
    ),
    token: str | None = typer.Option(
        None, help="Enrolment (admin) token used to register [env BNNBENCH_AGENT_TOKEN]"
    ),
    name: str | None = typer.Option(None, help="Agent name (default: hostname)"),
    cache_dir: Path | None = typer.Option(
        None, help="Cache, identity and outbox; one per agent [env BNNBENCH_AGENT_CACHE_DIR]"
    ),
    heartbeat_seconds: float | None = typer.Option(None, min=0.05, help="Heartbeat interval"),
    max_backoff_seconds: float | None = typer.Option(
        None, min=0.1, help="Upper bound of the retry backoff while the coordinator is away"
    ),
    poll_wait_seconds: float | None = typer.Option(
        None, min=0.1, help="Long-poll wait of each lease request"
    ),
    once: bool = typer.Option(False, "--once", help="Process one job, then exit"),
    max_jobs: int | None = typer.Option(None, min=1, help="Exit after this many jobs"),
    exit_when_idle: float | None = typer.Option(
        None, min=0.0, help="Exit after this many seconds without a job"
    ),
    log_level: str = typer.Option("info", help="debug, info, warning, error"),
) -> None:
    """Run the benchmark agent: register, lease jobs, run them here, report results."""
    from agent.daemon import Agent
    from bnnbench.settings import AgentSettings

    _setup_logging(log_level)
    overrides: dict[str, Any] = {
        "coordinator": coordinator,
        "token": token,
        "name": name,
        "cache_dir": cache_dir,
        "heartbeat_seconds": heartbeat_seconds,
        "max_backoff_seconds": max_backoff_seconds,
        "poll_wait_seconds": poll_wait_seconds,
    }
    settings = AgentSettings(**{k: v for k, v in overrides.items() if v is not None})
    if once:
        max_jobs = 1
    code = Agent(settings, max_jobs=max_jobs, exit_when_idle=exit_when_idle).run()
    raise typer.Exit(code)


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def run(
    artifact: Path = typer.Argument(..., help="Model artifact (e.g. a native .bnn file)"),
    runtime: str = typer.Option("native", help="Runtime (library) to run it with"),
    threads: int = typer.Option(1, help=f"Threads, 1-{MAX_THREADS}"),
    warmup: int = typer.Option(3, min=0, help="Untimed warm-up runs"),
    runs: int = typer.Option(10, min=1, help="Timed runs"),
    json_out: bool = typer.Option(False, "--json", help="Print the full result as JSON"),
) -> None:
    """Benchmark one artifact on this machine (no coordinator) and print the timings."""
    from agent.cache import sha256_file
    from agent.runners import RunnerError, get_runner
    from agent.transports import LocalTransport
    from bnnbench.stats import summarize

    if not 1 <= threads <= MAX_THREADS:
        raise _fail(f"--threads must be between 1 and {MAX_THREADS}, got {threads}")
    if not artifact.is_file():
        raise _fail(f"artifact not found: {artifact}")
    try:
        runner = get_runner(runtime)
    except RunnerError as exc:
        raise _fail(str(exc)) from None
    if not runner.available():
        reason = getattr(runner, "unavailable_reason", None) or "not available here"
        raise _fail(f"runtime {runtime!r} is not available: {reason}")
    transport = LocalTransport()
    env = transport.environment()
    try:
        out = runner.benchmark(artifact, threads, warmup, runs)
    except RunnerError as exc:
        raise _fail(f"cannot run {artifact}: {exc}") from None
    stats = summarize(out.samples_ms)
    digest = sha256_file(artifact)
    report = {
        "artifact": {"path": str(artifact), "sha256": digest, "size": artifact.stat().st_size},
        "runtime": runtime,
        "runtime_version": out.runtime_version,
        "threads": threads,
        "warmup": warmup,
        "runs": runs,
        "samples_ms": out.samples_ms,
        "stats": stats.model_dump(),
        "device": transport.device_info().model_dump(),
        "env": env,
        "extra": out.extra,
    }
    if json_out:
        typer.echo(json.dumps(report, indent=2))
        return
    _print_summary(report)


def _print_summary(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    s = report["stats"]
    dev = report["device"]
    table = Table(title=f"{report['artifact']['path']} — {report['runtime']}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("device", f"{dev['cpu_model']} ({dev['arch']}, {dev['cores']} cores)")
    table.add_row("runtime", report["runtime_version"])
    table.add_row("threads", str(report["threads"]))
    table.add_row("runs", f"{s['n']} timed after {report['warmup']} warm-up")
    table.add_row("median", f"{s['median_ms']:.3f} ms")
    table.add_row("mean ± sd", f"{s['mean_ms']:.3f} ± {s['stdev_ms']:.3f} ms")
    spread = f"{s['min_ms']:.3f} / {s['p90_ms']:.3f} / {s['max_ms']:.3f} ms"
    table.add_row("min / p90 / max", spread)
    size = report["artifact"]["size"]
    table.add_row("artifact", f"{size} bytes, sha256 {report['artifact']['sha256'][:16]}…")
    Console().print(table)


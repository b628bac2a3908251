"""``bnnbench agent`` (the daemon) and ``bnnbench run`` (one local benchmark, no coordinator).

Only light imports at module level: this module is loaded by every ``bnnbench`` invocation.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import typer

from bnnbench.schemas import MAX_THREADS


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
        None,
        help="Enrolment token used to register [env BNNBENCH_AGENT_TOKEN]; visible in `ps`: "
        "prefer the env variable or --token-file",
    ),
    token_file: Path | None = typer.Option(
        None,
        help="File holding the enrolment token, mode 0600 [env BNNBENCH_AGENT_TOKEN_FILE]",
    ),
    replace: bool = typer.Option(
        False,
        "--replace",
        help="Replace a live agent of the same name on this device (admin token only; its "
        "leased jobs go back to the queue); for this start only",
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
    devices: Path | None = typer.Option(
        None,
        help="devices.toml: the boards this agent serves over ssh/adb (and local:// for "
        "this machine); default: this machine only [env BNNBENCH_AGENT_DEVICES_FILE]",
    ),
    once: bool = typer.Option(False, "--once", help="Process one job, then exit"),
    max_jobs: int | None = typer.Option(None, min=1, help="Exit after this many jobs"),
    exit_when_idle: float | None = typer.Option(
        None, min=0.0, help="Exit after this many seconds without a job"
    ),
    log_level: str = typer.Option("info", help="debug, info, warning, error"),
) -> None:
    """Run the benchmark agent: register, lease jobs, run them here or on the boards of a
    devices file, report results."""
    from agent.daemon import Agent
    from agent.fleet import FleetConfigError, load_devices
    from agent.host import HostAgent
    from bnnbench.settings import AgentSettings
    from bnnbench.tokenfile import warn_command_line_token

    if token is not None and token_file is not None:
        raise _fail("give --token or --token-file, not both")
    if token is not None:
        warn_command_line_token("--token", "BNNBENCH_AGENT_TOKEN or --token-file")
    _setup_logging(log_level)
    overrides: dict[str, Any] = {
        "coordinator": coordinator,
        "token": token,
        "token_file": token_file,
        "name": name,
        "cache_dir": cache_dir,
        "heartbeat_seconds": heartbeat_seconds,
        "max_backoff_seconds": max_backoff_seconds,
        "poll_wait_seconds": poll_wait_seconds,
        "devices_file": devices,
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    # an option beats the environment: --token-file beats BNNBENCH_AGENT_TOKEN, --token
    # beats BNNBENCH_AGENT_TOKEN_FILE
    if token is not None:
        overrides["token_file"] = None
    if token_file is not None:
        overrides["token"] = ""
    settings = AgentSettings(**overrides)
    if settings.token and settings.token_file:
        raise _fail("both BNNBENCH_AGENT_TOKEN and BNNBENCH_AGENT_TOKEN_FILE are set: give one")
    if once:
        max_jobs = 1
    if settings.devices_file is None:
        worker = Agent(settings, max_jobs=max_jobs, exit_when_idle=exit_when_idle, replace=replace)
        raise typer.Exit(worker.run())
    try:
        specs = load_devices(settings.devices_file)
        host = HostAgent(
            settings, specs, max_jobs=max_jobs, exit_when_idle=exit_when_idle, replace=replace
        )
    except FleetConfigError as exc:
        raise _fail(str(exc)) from None
    raise typer.Exit(host.run())


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def run(
    artifact: Path = typer.Argument(..., help="Model artifact (e.g. a native .bnn file)"),
    library: str = typer.Option("native", help="Inference library to run it with"),
    # the flag's former name, kept for scripts written before `submit --library` set the term
    runtime: str | None = typer.Option(None, "--runtime", hidden=True),
    threads: int = typer.Option(1, help=f"Threads, 1-{MAX_THREADS}"),
    warmup: int = typer.Option(3, min=0, help="Untimed warm-up runs"),
    runs: int = typer.Option(10, min=1, help="Timed runs"),
    json_out: bool = typer.Option(False, "--json", help="Print the full result as JSON"),
) -> None:
    """Benchmark one artifact on this machine (no coordinator) and print the timings."""
    from agent.device import collect_device_info, environment
    from agent.runners import RunnerError, RunPlan, get_runner
    from bnnbench.digest import sha256_file
    from bnnbench.stats import summarize

    library = runtime or library
    if not 1 <= threads <= MAX_THREADS:
        raise _fail(f"--threads must be between 1 and {MAX_THREADS}, got {threads}")
    if not artifact.is_file():
        raise _fail(f"artifact not found: {artifact}")
    try:
        runner = get_runner(library)
    except RunnerError as exc:
        raise _fail(str(exc)) from None
    if not runner.available():
        reason = getattr(runner, "unavailable_reason", None) or "not available here"
        raise _fail(f"library {library!r} is not available: {reason}")
    env = environment()
    try:
        out = runner.benchmark(artifact, RunPlan(threads, warmup, runs))
    except RunnerError as exc:
        raise _fail(f"cannot run {artifact}: {exc}") from None
    stats = summarize(out.samples_ms)
    digest = sha256_file(artifact)
    report = {
        "artifact": {"path": str(artifact), "sha256": digest, "size": artifact.stat().st_size},
        "runtime": library,  # the report's key since its first version: kept for readers
        "runtime_version": out.runtime_version,
        "threads": threads,
        "warmup": warmup,
        "runs": runs,
        "samples_ms": out.samples_ms,
        "stats": stats.model_dump(),
        "device": collect_device_info().model_dump(),
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


# ------------------------------------------------------------------ devices add / probe


def _spec_from_options(url: str, **kw: Any) -> Any:
    from agent.fleet import FleetConfigError, parse_spec

    entry = {"url": url, **{k: v for k, v in kw.items() if v is not None}}
    try:
        return parse_spec(entry, url)
    except FleetConfigError as exc:
        raise _fail(str(exc)) from None


def _probe_spec(spec: Any) -> Any:
    from agent.fleet import FleetConfigError, open_transport
    from agent.probe import probe
    from agent.transports.base import TransportError

    try:
        transport = open_transport(spec)
        try:
            return probe(transport, exec_wrapper=spec.exec_wrapper, abi=spec.abi, name=spec.name)
        finally:
            transport.close()
    except (FleetConfigError, TransportError) as exc:
        raise _fail(f"cannot reach {spec.url}: {exc}") from None


_URL_HELP = "ssh://USER@HOST[:PORT], adb://SERIAL or local://"


def devices_probe(
    url: str = typer.Argument(..., help=_URL_HELP),
    key_file: str | None = typer.Option(None, help="ssh private key"),
    known_hosts: str | None = typer.Option(None, help="ssh known_hosts file"),
    host_key_policy: str | None = typer.Option(None, help="strict (default) or accept-new"),
    exec_wrapper: str | None = typer.Option(None, help="e.g. qemu-aarch64-static (emulated)"),
    abi: str | None = typer.Option(None, help="override the probed ABI"),
) -> None:
    """Probe a device and print what bnnbench sees (SoC, ABI, clusters, identity) as JSON."""
    spec = _spec_from_options(
        url,
        key_file=key_file,
        known_hosts=known_hosts,
        host_key_policy=host_key_policy,
        exec_wrapper=exec_wrapper,
        abi=abi,
    )
    info = _probe_spec(spec)
    typer.echo(
        json.dumps({**info.model_dump(mode="json"), "fingerprint": info.fingerprint()}, indent=2)
    )


def devices_add(
    url: str = typer.Argument(..., help=_URL_HELP),
    devices_file: Path = typer.Option(
        Path("devices.toml"), "--devices", help="the agent's devices file to add it to"
    ),
    name: str | None = typer.Option(None, help="row label (default: probed SoC/board)"),
    key_file: str | None = typer.Option(None, help="ssh private key"),
    password_env: str | None = typer.Option(None, help="ssh: read the password from this env var"),
    known_hosts: str | None = typer.Option(None, help="ssh known_hosts file"),
    host_key_policy: str | None = typer.Option(None, help="strict (default) or accept-new"),
    exec_wrapper: str | None = typer.Option(None, help="e.g. qemu-aarch64-static (emulated)"),
    abi: str | None = typer.Option(None, help="override the probed ABI"),
    affinity: str | None = typer.Option(None, help="big | all | CPU list (phones: big)"),
    workdir: str | None = typer.Option(None, help="device-side folder for the CLI and models"),
    lce_benchmark: str | None = typer.Option(None, help="lce_benchmark_model path on device"),
    dabnn_benchmark: str | None = typer.Option(None, help="benchmark_single_model on device"),
    no_probe: bool = typer.Option(False, "--no-probe", help="add without reaching it now"),
) -> None:
    """Add a board to a devices file after probing it (an agent started with
    `--devices FILE` serves it)."""
    from agent.fleet import FleetConfigError, load_devices, save_devices

    spec = _spec_from_options(
        url,
        name=name,
        key_file=key_file,
        password_env=password_env,
        known_hosts=known_hosts,
        host_key_policy=host_key_policy,
        exec_wrapper=exec_wrapper,
        abi=abi,
        affinity=affinity,
        workdir=workdir,
        lce_benchmark=lce_benchmark,
        dabnn_benchmark=dabnn_benchmark,
    )
    try:
        specs = load_devices(devices_file) if devices_file.exists() else []
    except FleetConfigError as exc:
        raise _fail(str(exc)) from None
    if any(s.url == spec.url for s in specs):
        raise _fail(f"{spec.url} is already in {devices_file}")
    if not no_probe:
        info = _probe_spec(spec)
        typer.echo(
            f"{spec.url}: {info.label()} ({info.abi}, {info.cores} cores, "
            f"{info.os}); fingerprint {info.fingerprint()}"
        )
    save_devices(devices_file, [*specs, spec])
    typer.echo(f"added to {devices_file}; serve it with: bnnbench agent --devices {devices_file}")

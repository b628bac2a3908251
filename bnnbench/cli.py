"""The ``bnnbench`` command. Each part contributes its subcommands from its own ``cli`` module;
those modules import heavy dependencies (FastAPI, onnx, ...) only inside the command bodies so
that ``bnnbench agent`` on a board never loads them."""

from __future__ import annotations

import typer

from agent import cli as agent_cli
from bnnbench import client_cli, compare_cli, plot_cli, tokens_cli
from converters import cli as converters_cli
from coordinator import cli as coordinator_cli

app = typer.Typer(
    help="bnnbench: benchmark binarized neural networks on real hardware.",
    no_args_is_help=True,
    add_completion=False,
)

app.command("serve")(coordinator_cli.serve)
app.command("agent")(agent_cli.agent)
app.command("run")(agent_cli.run)
app.command("zoo")(converters_cli.zoo)
app.command("analyze")(converters_cli.analyze)
app.command("convert")(converters_cli.convert)
app.command("submit")(client_cli.submit)
app.command("results")(client_cli.results)
app.command("compare")(compare_cli.compare)
app.command("plot")(plot_cli.plot)


@app.command("build-native")
def build_native(
    force: bool = typer.Option(False, "--force", help="rebuild every object"),
    jobs: int | None = typer.Option(None, "-j", "--jobs", help="parallel compile jobs"),
) -> None:
    """Build the native engine (libbnn.so, bnnbench-native) in the installed package, e.g.
    after a compiler upgrade; `pip install` already builds it once."""
    from native import engine

    try:
        built = engine.build(force=force, jobs=jobs)
    except engine.NativeError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    for name, path in built.items():
        typer.echo(f"{name}: {path}")


devices = typer.Typer(
    help="The fleet: list registered devices, probe and add boards.", no_args_is_help=True
)
devices.command("list")(client_cli.devices_list)
devices.command("probe")(agent_cli.devices_probe)
devices.command("add")(agent_cli.devices_add)
app.add_typer(devices, name="devices")
app.add_typer(tokens_cli.app, name="tokens")

if __name__ == "__main__":
    app()

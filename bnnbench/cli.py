"""The ``bnnbench`` command. Each part contributes its subcommands from its own ``cli`` module;
those modules import heavy dependencies (FastAPI, onnx, ...) only inside the command bodies so
that ``bnnbench agent`` on a board never loads them."""

from __future__ import annotations

import typer

from agent import cli as agent_cli
from bnnbench import client_cli
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

if __name__ == "__main__":
    app()

"""``python -m coordinator [serve options]``: the coordinator alone, without the rest of the
``bnnbench`` CLI (same options as ``bnnbench serve``)."""

import typer

from coordinator.cli import serve

if __name__ == "__main__":
    typer.run(serve)

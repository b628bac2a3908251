"""``bnnbench compare A B``: two devices, libraries or campaigns side by side, with the
significance of each latency difference (the logic: bnnbench.compare; the cells: the
coordinator's GET /results/compare)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bnnbench import compare as logic
from bnnbench.client_cli import TOKEN_FILE_HELP, client_from_options
from bnnbench.http import ApiError

_SELECTOR_HELP = (
    "comma-separated key=value: device=ID|NAME, library=native|lce|tflite|dabnn, model=ID, "
    "jobs=FIRST-LAST (a campaign), after=DATE, before=DATE"
)


def compare(
    a: str = typer.Argument(..., help=f"side A: {_SELECTOR_HELP}"),
    b: str = typer.Argument(..., help="side B, e.g. device=5 or library=lce"),
    coordinator: str | None = typer.Option(None, help="coordinator URL [BNNBENCH_COORDINATOR]"),
    token: str | None = typer.Option(None, help="admin token [BNNBENCH_TOKEN]"),
    token_file: Path | None = typer.Option(None, help=TOKEN_FILE_HELP),
    alpha: float = typer.Option(logic.ALPHA, help="significance level (Holm-adjusted)"),
    resamples: int = typer.Option(logic.RESAMPLES, help="permutation resamples of the test"),
    seed: int = typer.Option(logic.SEED, help="permutation seed (fixed: reproducible)"),
    json_out: bool = typer.Option(False, "--json", help="print the comparison as JSON"),
) -> None:
    """Matching cells (arch, algorithm, threads; device/library unless both sides name one):
    both medians, the ratio B/A, and the p-value of each difference from the raw samples
    (a Mann-Whitney U test, p-value by permutation).

    Examples: `bnnbench compare device=3 device=5`, `bnnbench compare library=native
    library=lce`, `bnnbench compare jobs=1-40 jobs=41-80`."""
    for side, text in (("A", a), ("B", b)):
        try:
            logic.parse_selector(text)  # a typo is refused here, before any request
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint=f"selector {side}") from None
    if not 0 < alpha < 1:
        raise typer.BadParameter("--alpha must be between 0 and 1")
    try:
        with client_from_options(coordinator, token, token_file) as client:
            data = client.compare(a, b, alpha=alpha, resamples=resamples, seed=seed)
    except ApiError as exc:
        http = f" (HTTP {exc.status_code})" if exc.status_code else ""
        Console(stderr=True).print(f"[red]error:[/red] {escape(exc.detail)}{http}")
        raise typer.Exit(2) from None
    if json_out:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return
    console = Console() if sys.stdout.isatty() else Console(width=160)
    console.print(f"A: {escape(data['a'])}    B: {escape(data['b'])}")
    if not data["rows"]:
        console.print("no matching cells (both sides need valid results of the same cell)")
    else:
        console.print(rich_table(data))
    console.print(f"[dim]test: {escape(data['test'])}[/dim]")
    console.print(f"[dim]significant (*): {escape(data['significance'])}[/dim]")
    for side in ("a", "b"):
        only = data[f"only_{side}"]
        if only:
            console.print(
                f"[dim]only in {side.upper()} ({len(only)}): {escape(', '.join(only))}[/dim]"
            )


def _ms(v: float) -> str:
    return f"{v:.4g}"


def rich_table(data: dict[str, Any]) -> Table:
    dims: list[str] = data["match_on"]
    t = Table(title="Median latency (ms): A vs B")
    for d in dims:
        t.add_column(d, justify="right" if d == "threads" else "left")
    for col in ("A", "B", "B/A", "n A/B", "p", "p (Holm)", ""):
        t.add_column(col, justify="right")
    for r in data["rows"]:
        ratio = r["ratio"]
        t.add_row(
            *(str(r[d]) for d in dims),
            _ms(r["median_a_ms"]),
            _ms(r["median_b_ms"]),
            "–" if ratio is None else f"{ratio:.3f}",
            f"{r['n_a']}/{r['n_b']}",
            f"{r['p_value']:.4f}",
            f"{r['p_holm']:.4f}",
            "*" if r["significant"] else "",
        )
    return t

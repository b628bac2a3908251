"""``bnnbench zoo``, ``bnnbench analyze`` and ``bnnbench convert``.

Only light imports at module level: this module is loaded by every ``bnnbench`` invocation
(including ``bnnbench agent`` on a board), so onnx/onnxruntime are imported in the bodies.
Model problems exit with status 2 and one line on stderr naming the node and op.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from converters.backends import BACKENDS  # the registry only: back ends load on first use

EXIT_MODEL_ERROR = 2


def _ratio_text(x: float | None) -> str:
    # None: undefined for this model (no parameters or no Conv/Gemm work: converters.analyze)
    return "n/a" if x is None else f"{x:.2f}"


def _fail(exc: Exception) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(EXIT_MODEL_ERROR)


def zoo(
    outdir: Path = typer.Argument(..., help="Directory to write the ONNX models into"),
    arch: list[str] = typer.Option(
        None, "--arch", help="resnet18, resnet34, vggsmall (repeatable; default: all)"
    ),
    algorithm: list[str] = typer.Option(
        None, "--algorithm", help="fp32, bnn, react (repeatable; default: all)"
    ),
    seed: int = typer.Option(0, help="Seed of the random weights"),
    binarize_downsample: bool = typer.Option(
        False, help="Also binarize ResNet's 1×1 downsample convs (the paper's complexity count)"
    ),
) -> None:
    """Write the model zoo (ResNet-18/34, VGG-Small × FP32/BNN/ReAct) as ONNX files."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from converters import zoo as zoo_mod

    archs = tuple(arch) if arch else zoo_mod.ARCHS
    algos = tuple(algorithm) if algorithm else zoo_mod.ALGORITHMS
    for value, allowed, what in (
        (archs, zoo_mod.ARCHS, "arch"),
        (algos, zoo_mod.ALGORITHMS, "algorithm"),
    ):
        bad = [v for v in value if v not in allowed]
        if bad:
            typer.echo(
                f"error: unknown {what} {bad[0]!r}; choose from {', '.join(allowed)}", err=True
            )
            raise typer.Exit(EXIT_MODEL_ERROR)
    total = len(archs) * len(algos)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        transient=not sys.stderr.isatty(),
    ) as progress:
        task = progress.add_task("writing zoo", total=total)
        started = [0]

        def step(name: str) -> None:
            if started[0]:
                progress.advance(task)
            started[0] += 1
            progress.update(task, description=f"writing {name}")

        entries = zoo_mod.write_zoo(
            outdir, archs, algos, seed, progress=step, binarize_downsample=binarize_downsample
        )
        progress.update(task, completed=total, description="zoo written")
    for e in entries:
        typer.echo(f"{e.path}  {e.size / 1e6:.1f} MB")


def analyze(
    model: Path = typer.Argument(..., help="ONNX model"),
    nodes: bool = typer.Option(True, "--nodes/--no-nodes", help="Include the per-node list"),
) -> None:
    """Print the binarization analysis and theoretical complexity of MODEL as JSON."""
    from converters import api
    from converters.errors import ConversionError

    try:
        result = api.analyze(model)
    except ConversionError as exc:
        raise _fail(exc) from None
    if not nodes:
        result.pop("nodes", None)
    typer.echo(json.dumps(result, indent=2))


def convert(
    model: Path = typer.Argument(..., help="ONNX model"),
    library: str = typer.Option(
        "native", help=f"Inference library to convert for: {', '.join(BACKENDS)}"
    ),
    # the flag's former name, kept for scripts written before `--library` became the one term
    # (as `bnnbench run --runtime`)
    to: str | None = typer.Option(None, "--to", hidden=True),
    output: Path = typer.Option(..., "-o", "--output", help="Output file"),
    as_json: bool = typer.Option(False, "--json", help="Print the full summary as JSON"),
    verify: bool = typer.Option(
        True, "--verify/--no-verify", help="Check the result against onnxruntime"
    ),
) -> None:
    """Convert MODEL for a library, verify its fidelity and print a summary (size, hashes,
    binarized layers, fidelity verdict)."""
    from converters import api
    from converters.errors import ConversionError

    try:
        summary = api.convert(model, to or library, output, verify=verify)
    except ConversionError as exc:
        raise _fail(exc) from None
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    lines = [
        f"wrote {summary['output']} ({summary['size_bytes']} bytes, sha256 "
        f"{summary['sha256'][:16]}…)",
        f"binary convs: {summary['n_binary_convs']} / {summary['n_convs']} convs; "
        f"theoretical speedup {_ratio_text(summary['theoretical']['speedup'])}, compression "
        f"{_ratio_text(summary['theoretical']['compression'])}",
    ]
    fid = summary.get("fidelity")
    if fid:
        lines.append(
            f"fidelity ({fid['backend']}): {fid['verdict']}; max rel err "
            f"{fid.get('max_rel_err', float('nan')):.2e}"
        )
    typer.echo("\n".join(lines))

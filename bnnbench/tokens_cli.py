"""``bnnbench tokens create | list | revoke``: enrolment tokens, which may only register agents.

A board gets an enrolment token instead of the admin token: whoever reads it off the board
can register agents (as many as its uses allow, until it expires), nothing else. After
registering, an agent works with its own token.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import typer

from bnnbench.client_cli import TOKEN_FILE_HELP, client_from_options
from bnnbench.http import ApiError
from bnnbench.schemas import EnrolmentTokenOut

app = typer.Typer(
    help="Enrolment tokens: give boards a token that may only register agents.",
    no_args_is_help=True,
)

_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``30m``, ``12h``, ``7d``, ``2w`` in seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text.lower())
    if not m or float(m[1]) <= 0:
        raise typer.BadParameter(
            f"{text!r} is no duration: a positive number with s, m, h, d or w (e.g. 12h, 7d)"
        )
    return float(m[1]) * _UNITS[m[2]]


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def _limits(t: EnrolmentTokenOut) -> str:
    uses = f"{t.uses}/{t.max_uses} uses" if t.max_uses is not None else f"{t.uses} uses"
    if t.revoked_at is not None:
        return f"{uses}, revoked {t.revoked_at:%Y-%m-%d %H:%M}Z"
    if t.expires_at is not None:
        return f"{uses}, expires {t.expires_at:%Y-%m-%d %H:%M}Z"
    return f"{uses}, no expiry"


def _describe(t: EnrolmentTokenOut) -> str:
    usable = "usable" if t.usable else "unusable"
    note = f"  {t.note}" if t.note else ""
    return f"{t.id:>4}  {usable:<8}  {_limits(t)}{note}"


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its mode otherwise
    with os.fdopen(fd, "w") as f:
        f.write(text)


@app.command("create")
def create(
    uses: int | None = typer.Option(
        None, "--uses", min=1, help="registrations it allows (default: unlimited)"
    ),
    expires_in: str | None = typer.Option(
        None, "--expires-in", help="valid for this long: 30m, 12h, 7d, 2w (default: no expiry)"
    ),
    note: str | None = typer.Option(None, help="what it is for, shown by `tokens list`"),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="write the token to this file (mode 0600), not stdout"
    ),
    json_out: bool = typer.Option(False, "--json", help="print the token and its limits as JSON"),
    coordinator: str | None = typer.Option(None, help="coordinator URL [BNNBENCH_COORDINATOR]"),
    token: str | None = typer.Option(None, help="admin token [BNNBENCH_TOKEN]"),
    token_file: Path | None = typer.Option(None, help=TOKEN_FILE_HELP),
) -> None:
    """Create an enrolment token (admin token needed). It is printed once, alone on stdout
    (or written to --output): hand it to the agent with --token-file or
    BNNBENCH_AGENT_TOKEN."""
    seconds = parse_duration(expires_in) if expires_in is not None else None
    with client_from_options(coordinator, token, token_file) as client:
        try:
            made = client.create_enrolment_token(
                note=note, max_uses=uses, expires_in_seconds=seconds
            )
        except ApiError as exc:
            raise _fail(f"{exc.detail} (HTTP {exc.status_code})") from None
    if json_out:
        body = made.model_dump(mode="json")
        if output is not None:
            body.pop("token")
        sys.stdout.write(json.dumps(body, indent=2) + "\n")
    if output is not None:
        _write_private(output, made.token + "\n")
        typer.echo(f"enrolment token {made.id} written to {output}", err=True)
    elif not json_out:
        typer.echo(made.token)
    if not json_out:
        typer.echo(
            f"enrolment token {made.id} ({_limits(made)}); shown once. It may only register "
            "agents: "
            "bnnbench agent --token-file FILE (or BNNBENCH_AGENT_TOKEN)",
            err=True,
        )


@app.command("list")
def list_tokens(
    json_out: bool = typer.Option(False, "--json", help="print the tokens as JSON"),
    coordinator: str | None = typer.Option(None, help="coordinator URL [BNNBENCH_COORDINATOR]"),
    token: str | None = typer.Option(None, help="admin token [BNNBENCH_TOKEN]"),
    token_file: Path | None = typer.Option(None, help=TOKEN_FILE_HELP),
) -> None:
    """Every enrolment token: uses, expiry, revoked or not (never the token itself)."""
    with client_from_options(coordinator, token, token_file) as client:
        try:
            rows = client.enrolment_tokens()
        except ApiError as exc:
            raise _fail(f"{exc.detail} (HTTP {exc.status_code})") from None
    if json_out:
        sys.stdout.write(json.dumps([t.model_dump(mode="json") for t in rows], indent=2) + "\n")
        return
    if not rows:
        typer.echo("no enrolment tokens (create one: bnnbench tokens create)")
    for t in rows:
        typer.echo(_describe(t))


@app.command("revoke")
def revoke(
    token_id: int = typer.Argument(..., min=0, help="the token's id (bnnbench tokens list)"),
    coordinator: str | None = typer.Option(None, help="coordinator URL [BNNBENCH_COORDINATOR]"),
    token: str | None = typer.Option(None, help="admin token [BNNBENCH_TOKEN]"),
    token_file: Path | None = typer.Option(None, help=TOKEN_FILE_HELP),
) -> None:
    """Revoke an enrolment token: it registers no more agents. Agents it registered keep
    working with their own tokens."""
    with client_from_options(coordinator, token, token_file) as client:
        try:
            t = client.revoke_enrolment_token(token_id)
        except ApiError as exc:
            raise _fail(f"{exc.detail} (HTTP {exc.status_code})") from None
    typer.echo(_describe(t))

"""``bnnbench serve``: run the coordinator with uvicorn. Heavy imports stay inside the command
body: the agent imports the CLI module on boards without FastAPI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer


def serve(
    host: str | None = typer.Option(None, help="bind address [BNNBENCH_HOST, 127.0.0.1]"),
    port: int | None = typer.Option(None, help="port [BNNBENCH_PORT, 8321]"),
    data_dir: Path | None = typer.Option(
        None, help="database (SQLite) and blob store [BNNBENCH_DATA_DIR, ./var]"
    ),
    database_url: str | None = typer.Option(
        None, help="SQLAlchemy URL instead of SQLite in data_dir [BNNBENCH_DATABASE_URL]"
    ),
    admin_token: str | None = typer.Option(
        None,
        help="admin/user bearer token [BNNBENCH_ADMIN_TOKEN]; visible in `ps`: prefer the "
        "env variable or --admin-token-file",
    ),
    admin_token_file: Path | None = typer.Option(
        None,
        help="file holding the admin token (mode 0600) [BNNBENCH_ADMIN_TOKEN_FILE]",
    ),
    lease_seconds: float | None = typer.Option(
        None, help="job lease duration without heartbeat [BNNBENCH_LEASE_SECONDS, 60]"
    ),
    conversion_workers: int | None = typer.Option(
        None,
        help="concurrent converter processes, 0 pauses conversions "
        "[BNNBENCH_CONVERSION_WORKERS, 1]",
    ),
    log_level: str = typer.Option("info", help="uvicorn/coordinator log level"),
) -> None:
    """Run the coordinator: REST API under /api/v1, OpenAPI at /docs, dashboard at /."""
    import logging

    import uvicorn
    from pydantic import ValidationError

    from bnnbench.settings import CoordinatorSettings
    from bnnbench.tokenfile import warn_command_line_token
    from coordinator.app import create_app
    from coordinator.auth import InsecureAdminToken, check_admin_token
    from coordinator.server import make_config
    from coordinator.telemetry import InsecureMetricsToken

    if admin_token is not None and admin_token_file is not None:
        raise _fail("give --admin-token or --admin-token-file, not both")
    if admin_token is not None:
        warn_command_line_token("--admin-token", "BNNBENCH_ADMIN_TOKEN or --admin-token-file")
    overrides: dict[str, Any] = {
        k: v
        for k, v in {
            "host": host,
            "port": port,
            "data_dir": data_dir,
            "database_url": database_url,
            "admin_token": admin_token,
            "lease_seconds": lease_seconds,
            "conversion_workers": conversion_workers,
        }.items()
        if v is not None
    }
    # an option beats the environment: --admin-token-file beats BNNBENCH_ADMIN_TOKEN,
    # --admin-token beats BNNBENCH_ADMIN_TOKEN_FILE
    if admin_token is not None:
        overrides["admin_token_file"] = None
    if admin_token_file is not None:
        overrides.update(admin_token="", admin_token_file=admin_token_file)
    try:
        settings = CoordinatorSettings(**overrides)
        check_admin_token(settings.admin_token)
    except ValidationError as exc:
        msgs = (str(e.get("msg", "")).removeprefix("Value error, ") for e in exc.errors())
        raise _fail("; ".join(msgs)) from None
    except InsecureAdminToken as exc:
        raise _fail(str(exc)) from None
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    log = logging.getLogger("bnnbench.coordinator")
    try:
        app = create_app(settings)
    except InsecureMetricsToken as exc:
        raise _fail(str(exc)) from None
    # header/body timeouts, connection limit, open-files limit: coordinator/server.py
    config = make_config(app, settings, log_level)
    server = uvicorn.Server(config)
    app.state.ctx.should_exit = lambda: server.should_exit
    log.info(
        "coordinator on http://%s:%d (data in %s, database %s; header timeout %g s, body "
        "timeout %g s, max connections %s)",
        settings.host,
        settings.port,
        settings.data_dir,
        settings.resolved_database_url().split("@")[-1],
        settings.header_timeout_s,
        settings.body_timeout_s,
        config.limit_concurrency or "unlimited",
    )
    server.run()


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)

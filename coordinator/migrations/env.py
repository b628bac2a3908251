"""Alembic environment: migrates the connection :func:`coordinator.migrations.migrate` (or
``python -m coordinator.migrations``) hands over in ``config.attributes["connection"]``,
inside that caller's transaction. Online only: the baseline inspects the database."""

from __future__ import annotations

from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy import Connection

from coordinator.migrations import VERSION_TABLE
from coordinator.models import Base, UTCDateTime

config = context.config


def render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    """Autogenerate writes our timestamp type as the column type it stores (a migration never
    imports the models: they change, migrations must not)."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime()"
    return False


def run() -> None:
    if context.is_offline_mode():
        raise RuntimeError("offline (--sql) migrations are not supported: the baseline inspects")
    connection = config.attributes.get("connection")
    if not isinstance(connection, Connection):
        raise RuntimeError(
            "no connection: run migrations through coordinator.migrations "
            "(the coordinator does at startup; `python -m coordinator.migrations --help`)"
        )
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        render_as_batch=True,  # SQLite alters tables by copying them; batch ops do that
        render_item=render_item,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run()

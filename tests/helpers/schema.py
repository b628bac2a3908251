"""Databases as older versions left them, and the checks the migration tests share."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.pool import NullPool

from coordinator.models import Base

# columns added after the first release: a database made then lacks them
LATER_TABLES = ("enrolment_tokens",)  # made by migration 0002
ADDED = {"devices": ("name", "emulated", "attributes"), "jobs": ("protocol", "remeasures")}

LEGACY_DEVICE = (
    "INSERT INTO devices (fingerprint, hostname, arch, os, cpu_model, cores, isa_flags,"
    " transport, created_at) VALUES ('pi|aarch64|A72|4|local', 'pi', 'aarch64', 'L',"
    " 'Cortex-A72', 4, '[]', 'local', '2026-01-01 00:00:00')"
)


def make_older_database(url: str) -> None:
    """What the release before migrations left: ``create_all`` of its schema (today's tables
    without the ADDED columns), no alembic_version, one device row. Portable SQL only."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        # tables added by later migrations did not exist then
        old = [t for name, t in Base.metadata.tables.items() if name not in LATER_TABLES]
        Base.metadata.create_all(engine, tables=old)
        with engine.begin() as conn:
            for table, cols in ADDED.items():
                for col in cols:
                    conn.execute(text(f"ALTER TABLE {table} DROP COLUMN {col}"))
            conn.execute(text(LEGACY_DEVICE))
    finally:
        engine.dispose()


def drift(engine: Engine) -> list[Any]:
    """What Alembic's autogenerate sees between coordinator/models.py and the database
    (empty: the migrated schema is the models' schema)."""
    with engine.connect() as conn:
        return list(compare_metadata(MigrationContext.configure(conn), Base.metadata))


def versions(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(text("SELECT version_num FROM alembic_version"))]


def set_version(engine: Engine, revision: str) -> None:
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = :r"), {"r": revision})

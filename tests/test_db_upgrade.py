"""A database made by a version before migrations (tables from ``create_all``, no
alembic_version) opens in place: the baseline migration adds the columns added since (device
identity and attributes, a job's measurement protocol and re-measure count), it is stamped
and upgraded to head, nothing stored is lost, and its schema is then exactly the models'."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from helpers.schema import ADDED, drift, make_older_database, versions
from sqlalchemy import select

from bnnbench.settings import CoordinatorSettings
from coordinator.db import Database
from coordinator.migrations import head
from coordinator.models import Device, Job


def test_older_database_gets_new_columns_and_keeps_rows(tmp_path: Path) -> None:
    settings = CoordinatorSettings(data_dir=tmp_path)
    path = tmp_path / "bnnbench.db"
    make_older_database(f"sqlite:///{path}")
    with sqlite3.connect(path) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert "alembic_version" not in tables and "devices" in tables

    db = Database(settings)
    try:
        assert db.schema.adopted and db.schema.before is None and db.schema.after == head()
        assert "made before migrations" in db.schema.describe()
        with sqlite3.connect(path) as conn:
            for table, cols in ADDED.items():
                have = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
                assert set(cols) <= have, (table, have)
        assert versions(db.engine) == [head()]
        assert drift(db.engine) == []  # columns, types, indexes, constraints: the models'
        with db.session() as s:
            [dev] = s.scalars(select(Device)).all()
            assert dev.hostname == "pi" and dev.emulated is False and dev.attributes is None
            assert dev.label() == "pi"  # no stable id known: its hostname is all there is
            assert s.scalars(select(Job)).all() == []
    finally:
        db.dispose()

    again = Database(settings)  # stamped: opened again, nothing to do
    try:
        assert not again.schema.migrated and not again.schema.adopted
    finally:
        again.dispose()

"""A database made by an older version opens in place: columns added since (device identity
and attributes, a job's measurement protocol and re-measure count) are added, nothing stored
is lost."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy import select

from bnnbench.settings import CoordinatorSettings
from coordinator.db import Database
from coordinator.models import Device, Job

ADDED = {"devices": ("name", "emulated", "attributes"), "jobs": ("protocol", "remeasures")}


def test_older_database_gets_new_columns_and_keeps_rows(tmp_path: Path) -> None:
    settings = CoordinatorSettings(data_dir=tmp_path)
    Database(settings).dispose()
    path = tmp_path / "bnnbench.db"
    with sqlite3.connect(path) as conn:  # make it look like the previous release's schema
        for table, cols in ADDED.items():
            for col in cols:
                conn.execute(f"ALTER TABLE {table} DROP COLUMN {col}")
        conn.execute(
            "INSERT INTO devices (fingerprint, hostname, arch, os, cpu_model, cores, isa_flags,"
            " transport, created_at) VALUES ('pi|aarch64|A72|4|local', 'pi', 'aarch64', 'L',"
            " 'Cortex-A72', 4, '[]', 'local', '2026-01-01 00:00:00')"
        )
    db = Database(settings)
    try:
        with sqlite3.connect(path) as conn:
            for table, cols in ADDED.items():
                have = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
                assert set(cols) <= have, (table, have)
        with db.session() as s:
            [dev] = s.scalars(select(Device)).all()
            assert dev.hostname == "pi" and dev.emulated is False and dev.attributes is None
            assert dev.label() == "pi"  # no stable id known: its hostname is all there is
            assert s.scalars(select(Job)).all() == []
    finally:
        db.dispose()

"""Schema migrations (coordinator/migrations): a fresh database is built by the migrations and
stamped; a second open costs one query and runs nothing; a database from a newer version is
refused; the history stays one line; the same migrations give the models' schema on a real
PostgreSQL server (``-m postgres``; skipped without its binaries or psycopg)."""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import CoordinatorProcess
from helpers.postgres import PostgresServer
from helpers.schema import drift, make_older_database, set_version, versions
from sqlalchemy import Engine, event, inspect, select

import coordinator.migrations as migrations
from bnnbench.settings import CoordinatorSettings
from coordinator.db import Database, make_engine
from coordinator.migrations import SchemaVersionError, head, migrate, script_directory
from coordinator.migrations.__main__ import main as migrations_cli
from coordinator.models import Base, Device


def _count_statements(engine: Engine) -> list[str]:
    seen: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _record(_c: Any, _cur: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    return seen


def test_fresh_database_is_built_by_the_migrations(tmp_path: Path) -> None:
    db = Database(CoordinatorSettings(data_dir=tmp_path))
    try:
        assert db.schema.before is None and db.schema.after == head() and not db.schema.adopted
        assert (
            db.schema.describe()
            == f"database schema migrated to revision {head()} from a new database"
        )
        assert versions(db.engine) == [head()]
        assert set(inspect(db.engine).get_table_names()) == {
            *Base.metadata.tables,
            "alembic_version",
        }
        diff = drift(db.engine)
        assert diff == [], (
            "coordinator/models.py and the migrations differ; write one with "
            f'`python -m coordinator.migrations new "..."`: {diff}'
        )
    finally:
        db.dispose()


def test_second_open_is_one_query_and_runs_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = CoordinatorSettings(data_dir=tmp_path)
    Database(settings).dispose()

    import alembic.command

    def _no_upgrade(*_: Any, **__: Any) -> None:
        raise AssertionError("migrations ran again on a database at head")

    monkeypatch.setattr(alembic.command, "upgrade", _no_upgrade)
    engine = make_engine(settings)
    try:
        statements = _count_statements(engine)
        report = migrate(engine)
        assert not report.migrated and report.after == head()
        assert statements == ["SELECT version_num FROM alembic_version"]
    finally:
        engine.dispose()
    db = Database(settings)
    try:
        assert db.schema.describe() == f"database schema at revision {head()} (up to date)"
    finally:
        db.dispose()


def test_newer_database_is_refused_and_left_alone(tmp_path: Path) -> None:
    settings = CoordinatorSettings(data_dir=tmp_path)
    db = Database(settings)
    set_version(db.engine, "9999")
    db.dispose()
    with pytest.raises(SchemaVersionError, match=r"revision 9999.*does not know.*newer version"):
        Database(settings)
    with sqlite3.connect(tmp_path / "bnnbench.db") as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [("9999",)]
    assert migrations_cli(["upgrade", "--data-dir", str(tmp_path)]) == 2


def test_failed_migration_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One transaction on SQLite too (pysqlite would autocommit each DDL statement)."""
    import alembic.command

    real = alembic.command.upgrade

    def _upgrade_then_fail(*args: Any, **kw: Any) -> None:
        real(*args, **kw)
        raise RuntimeError("power cut")

    monkeypatch.setattr(alembic.command, "upgrade", _upgrade_then_fail)
    with pytest.raises(RuntimeError, match="power cut"):
        Database(CoordinatorSettings(data_dir=tmp_path))
    with sqlite3.connect(tmp_path / "bnnbench.db") as conn:
        assert conn.execute("SELECT name FROM sqlite_master").fetchall() == []
    monkeypatch.undo()
    db = Database(CoordinatorSettings(data_dir=tmp_path))  # and the next start succeeds
    try:
        assert db.schema.migrated and drift(db.engine) == []
        with db.engine.connect() as conn:  # the pooled connection got its foreign keys back
            assert conn.exec_driver_sql("PRAGMA foreign_keys").fetchone() == (1,)
    finally:
        db.dispose()


def test_two_coordinators_starting_together_migrate_once(tmp_path: Path) -> None:
    settings = CoordinatorSettings(data_dir=tmp_path)
    barrier = threading.Barrier(2)
    reports: list[migrations.MigrationReport] = []
    errors: list[BaseException] = []

    def start() -> None:
        engine = make_engine(settings)
        try:
            barrier.wait()
            reports.append(migrate(engine))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=start) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert sorted(r.migrated for r in reports) == [False, True]


def test_history_is_one_line_named_by_revision() -> None:
    """Revision ids 0001, 0002, … each in versions/v<rev>_<slug>.py, each revising the one
    before: `python -m coordinator.migrations new` keeps it so; a merge of two branches that
    both added 0002 fails here instead of giving two heads."""
    scripts = list(reversed(list(script_directory().walk_revisions())))
    assert [s.revision for s in scripts] == [f"{i:04d}" for i in range(1, len(scripts) + 1)]
    assert [s.down_revision for s in scripts] == [None, *(s.revision for s in scripts[:-1])]
    for s in scripts:
        assert s.path is not None and re.fullmatch(rf"v{s.revision}_\w+\.py", Path(s.path).name)
    files = sorted(p.name for p in (migrations.HERE / "versions").glob("v*.py"))
    assert len(files) == len(scripts), files
    assert head() == scripts[-1].revision


def test_new_migration_without_model_changes_writes_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = sorted((migrations.HERE / "versions").iterdir())
    assert migrations_cli(["new", "nothing changed"]) == 1
    assert "nothing to write" in capsys.readouterr().err
    assert sorted((migrations.HERE / "versions").iterdir()) == before


@pytest.mark.slow  # three coordinator starts
def test_serve_logs_its_revision_and_refuses_a_newer_database(
    coordinator_factory: Callable[..., CoordinatorProcess],
) -> None:
    c = coordinator_factory(conversion_workers=0)
    assert f"migrated to revision {head()} from a new database" in c.log_tail()
    c.restart()
    assert f"database schema at revision {head()} (up to date)" in c.log_tail(15)
    c.stop()
    with sqlite3.connect(c.db_path) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(RuntimeError, match="does not know"):
        c.start(timeout=30)
    assert "refusing to start" in c.log_tail()


# ---------------------------------------------------------------- PostgreSQL


def _pg_settings(pg: PostgresServer, tmp_path: Path) -> CoordinatorSettings:
    return CoordinatorSettings(data_dir=tmp_path, database_url=pg.create_database())


@pytest.mark.postgres
def test_postgres_fresh_database_matches_the_models(pg: PostgresServer, tmp_path: Path) -> None:
    settings = _pg_settings(pg, tmp_path)
    db = Database(settings)
    try:
        assert db.schema.migrated and db.schema.after == head()
        assert versions(db.engine) == [head()]
        assert drift(db.engine) == []
        with db.session() as s:
            dev = Device(fingerprint="f", hostname="h", arch="x86", os="L", cpu_model="c", cores=2)
            s.add(dev)
            dev.transport = "local"
        with db.session() as s:
            dev = s.scalars(select(Device)).one()
            assert dev.emulated is False and dev.created_at.utcoffset() is not None
    finally:
        db.dispose()
    again = Database(settings)
    try:
        assert not again.schema.migrated
    finally:
        again.dispose()


@pytest.mark.postgres
def test_postgres_older_database_upgrades_in_place(pg: PostgresServer, tmp_path: Path) -> None:
    settings = _pg_settings(pg, tmp_path)
    assert settings.database_url
    make_older_database(settings.database_url)
    db = Database(settings)
    try:
        assert db.schema.adopted and db.schema.after == head()
        assert drift(db.engine) == []
        with db.session() as s:
            dev = s.scalars(select(Device)).one()
            assert dev.hostname == "pi" and dev.emulated is False and dev.name is None
    finally:
        db.dispose()


@pytest.mark.postgres
def test_postgres_newer_database_is_refused(pg: PostgresServer, tmp_path: Path) -> None:
    settings = _pg_settings(pg, tmp_path)
    db = Database(settings)
    set_version(db.engine, "9999")
    db.dispose()
    with pytest.raises(SchemaVersionError, match="9999"):
        Database(settings)


# ---------------------------------------------------------------- 0003: one agent per name


def _database_at(url: str, revision: str) -> None:
    """A database as the version at ``revision`` left it (its migrations, no later ones)."""
    from alembic import command
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            command.upgrade(migrations.alembic_config(conn), revision)
            conn.commit()
    finally:
        engine.dispose()


def _duplicate_agents(url: str) -> dict[str, int]:
    """At revision 0002 (no unique index yet): three agents "pi" on one device (created in
    the order 1, 3, 2 of their ids), one "other" on it, jobs leased by and results posted by
    each "pi"; the ids by role."""
    from datetime import datetime

    from sqlalchemy import MetaData, create_engine, insert
    from sqlalchemy.pool import NullPool

    engine = create_engine(url, poolclass=NullPool)
    t0 = datetime(2026, 1, 1)
    try:
        md = MetaData()
        md.reflect(engine)
        tables = md.tables
        with engine.begin() as conn:

            def add(table: str, **values: Any) -> int:
                row = conn.execute(
                    insert(tables[table]).values(**values).returning(tables[table].c.id)
                )
                return int(row.scalar_one())

            dev = add(
                "devices",
                fingerprint="fp",
                hostname="pi",
                arch="aarch64",
                os="L",
                cpu_model="A72",
                cores=4,
                isa_flags=[],
                transport="local",
                emulated=False,
                created_at=t0,
            )
            model = add(
                "models", name="m", sha256="a" * 64, size=1, analysis_status="done", created_at=t0
            )
            art = add(
                "artifacts",
                model_id=model,
                library="native",
                status="ready",
                sha256="b" * 64,
                size=1,
                created_at=t0,
                updated_at=t0,
            )
            ids: dict[str, int] = {}
            # created 00:01, 00:03, 00:02: the second row is the newest
            for role, minute in (("oldest", 1), ("newest", 3), ("middle", 2)):
                ids[role] = add(
                    "agents",
                    name="pi",
                    token_hash=role.ljust(64, "0"),
                    device_id=dev,
                    runtimes={},
                    created_at=t0.replace(minute=minute),
                    last_seen=t0,
                )
            ids["other"] = add(
                "agents",
                name="other",
                token_hash="o" * 64,
                device_id=dev,
                runtimes={},
                created_at=t0,
                last_seen=t0,
            )
            for role in ("oldest", "newest", "middle", "other"):
                job = add(
                    "jobs",
                    model_id=model,
                    library="native",
                    artifact_id=art,
                    threads=1,
                    warmup=1,
                    runs=3,
                    status="leased",
                    attempts=0,
                    remeasures=0,
                    history=[],
                    leased_by=ids[role],
                    lease_id=role,
                    created_at=t0,
                    updated_at=t0,
                )
                ids[f"job-{role}"] = job
                ids[f"result-{role}"] = add(
                    "results",
                    job_id=job,
                    agent_id=ids[role],
                    device_id=dev,
                    stats={},
                    median_ms=1.0,
                    samples_ms=[1.0],
                    runtime_version="v",
                    device_fingerprint="fp",
                    artifact_sha256="b" * 64,
                    threads=1,
                    env={},
                    valid=True,
                    verdict="ok",
                    created_at=t0,
                )
    finally:
        engine.dispose()
    return ids


def _check_deduplicated(db: Database, ids: dict[str, int]) -> None:
    from sqlalchemy.exc import IntegrityError

    from coordinator.models import Agent, Job, Result

    assert drift(db.engine) == []
    with db.session() as s:
        agents = {a.id: a.name for a in s.scalars(select(Agent))}
        assert agents == {ids["newest"]: "pi", ids["other"]: "other"}
        for role in ("oldest", "newest", "middle"):  # the merged agents' work is the newest's
            job = s.get(Job, ids[f"job-{role}"])
            result = s.get(Result, ids[f"result-{role}"])
            assert job is not None and job.leased_by == ids["newest"]
            assert result is not None and result.agent_id == ids["newest"]
        other = s.get(Job, ids["job-other"])
        assert other is not None and other.leased_by == ids["other"]
        device_id = s.scalars(select(Agent.device_id)).first()
    with pytest.raises(IntegrityError), db.session() as s:  # and now the index refuses a twin
        s.add(Agent(name="pi", token_hash="t" * 64, device_id=device_id))


def test_duplicate_agents_of_an_older_database_are_merged_into_the_newest(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'bnnbench.db'}"
    _database_at(url, "0002")
    ids = _duplicate_agents(url)
    db = Database(CoordinatorSettings(data_dir=tmp_path))
    try:
        assert db.schema.before == "0002" and db.schema.after == head()
        _check_deduplicated(db, ids)
    finally:
        db.dispose()


@pytest.mark.postgres
def test_postgres_duplicate_agents_are_merged_into_the_newest(
    pg: PostgresServer, tmp_path: Path
) -> None:
    settings = _pg_settings(pg, tmp_path)
    assert settings.database_url
    _database_at(settings.database_url, "0002")
    ids = _duplicate_agents(settings.database_url)
    db = Database(settings)
    try:
        assert db.schema.before == "0002" and db.schema.after == head()
        _check_deduplicated(db, ids)
    finally:
        db.dispose()

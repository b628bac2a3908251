"""Schema migrations (Alembic), run by the coordinator at startup; no ``alembic.ini`` needed.

The scripts live here: ``env.py`` and ``versions/v<rev>_<slug>.py``, revision ids ``0001``,
``0002``, … in one line of history. :func:`migrate` brings any database to head:

- at head already: one query (``SELECT version_num FROM alembic_version``), nothing else;
- fresh (none of our tables): the migrations create the schema from nothing and stamp it;
- made by a version before migrations (our tables, no ``alembic_version``): the baseline
  migration adds what that version's ``create_all`` lacked, then it is stamped and upgraded;
- at a revision these scripts do not know (made by a newer bnnbench): refused with
  :class:`SchemaVersionError`, never used.

Migrating holds a lock (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: an advisory transaction
lock) and re-reads the revision under it, so two coordinators starting on one database
migrate it once; the whole upgrade is one transaction on both.

A new migration: ``python -m coordinator.migrations new "what changed"`` (autogenerate
against a scratch SQLite database at head; review the file it writes).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, inspect, text
from sqlalchemy.exc import DBAPIError

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

log = logging.getLogger("bnnbench.coordinator.migrations")

HERE = Path(__file__).resolve().parent
VERSION_TABLE = "alembic_version"
# pg_advisory_xact_lock key: serializes coordinators migrating one PostgreSQL database
_PG_LOCK_KEY = 0x626E6E62  # "bnnb"


class SchemaVersionError(RuntimeError):
    """The database is at a revision this version's migrations do not know."""


@dataclass(frozen=True)
class MigrationReport:
    """Where the database was and where it is now."""

    before: str | None  # None: no alembic_version (fresh, or made before migrations)
    after: str
    adopted: bool = False  # made by a version before migrations, brought to the baseline

    @property
    def migrated(self) -> bool:
        return self.before != self.after

    def describe(self) -> str:
        if not self.migrated:
            return f"database schema at revision {self.after} (up to date)"
        if self.adopted:
            origin = "a database made before migrations (no alembic_version)"
        elif self.before is None:
            origin = "a new database"
        else:
            origin = f"revision {self.before}"
        return f"database schema migrated to revision {self.after} from {origin}"


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config for the scripts in this package; ``connection`` is what ``env.py``
    migrates (it never opens one of its own)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.set_main_option("file_template", "v%%(rev)s_%%(slug)s")
    cfg.set_main_option("truncate_slug_length", "40")
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


@cache
def script_directory() -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config())


def head() -> str:
    """The newest revision these scripts know (history is one line: one head)."""
    heads = script_directory().get_heads()
    if len(heads) != 1:
        raise RuntimeError(f"migration history must have one head, found {sorted(heads)}")
    return heads[0]


def known_revisions() -> set[str]:
    return {s.revision for s in script_directory().walk_revisions()}


def _read_versions(engine: Engine) -> set[str] | None:
    """The fast path's one query; None when the version table cannot be read (no table yet:
    the careful path finds out why)."""
    try:
        with engine.connect() as conn:
            return {r[0] for r in conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}"))}
    except DBAPIError:
        return None


def _check_known(versions: set[str], engine: Engine) -> None:
    unknown = sorted(versions - known_revisions())
    if unknown:
        url = engine.url.render_as_string(hide_password=True)
        raise SchemaVersionError(
            f"database {url} is at schema revision {', '.join(unknown)}, which this bnnbench "
            f"does not know (its newest is {head()}): a newer version made or upgraded it. "
            "Refusing to use it: run that newer version, or point --data-dir / "
            "BNNBENCH_DATABASE_URL at another database."
        )


def _keep_upgrade_lines(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or record.getMessage().startswith("Running ")


@contextmanager
def _quiet_alembic() -> Iterator[None]:
    """Alembic's INFO lines about its context ("Will assume non-transactional DDL": we hold a
    transaction anyway) and plugins are noise in the coordinator's log; its "Running upgrade
    A -> B" lines stay."""
    loggers = [
        logging.getLogger(n) for n in ("alembic.runtime.migration", "alembic.runtime.plugins")
    ]
    for lg in loggers:
        lg.addFilter(_keep_upgrade_lines)
    try:
        yield
    finally:
        for lg in loggers:
            lg.removeFilter(_keep_upgrade_lines)


def _lock(conn: Connection) -> None:
    """Begin the migration transaction holding the database's write lock."""
    if conn.dialect.name == "sqlite":
        # pysqlite starts no transaction for DDL: begin one explicitly, taking the write lock
        # now (a second coordinator waits here, busy_timeout); foreign keys off while batch
        # mode may copy tables (the pragma is a no-op inside a transaction)
        conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    elif conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})


def migrate(engine: Engine) -> MigrationReport:
    """Bring the database to head (see the module docstring); raises SchemaVersionError for a
    database from a newer version."""
    target = head()
    versions = _read_versions(engine)
    if versions == {target}:
        return MigrationReport(before=target, after=target)
    if versions:
        _check_known(versions, engine)

    from alembic import command
    from alembic.runtime.migration import MigrationContext

    from coordinator.models import Base

    with engine.connect() as conn:
        try:
            _lock(conn)
            # again under the lock: another process may have migrated meanwhile
            with _quiet_alembic():
                current = set(MigrationContext.configure(conn).get_current_heads())
            _check_known(current, engine)
            before = next(iter(current)) if len(current) == 1 else None
            adopted = False
            if not current:
                ours = set(Base.metadata.tables)
                adopted = bool(ours & set(inspect(conn).get_table_names()))
                if adopted:
                    log.info("database made before migrations: bringing it to the baseline")
            if current != {target}:
                with _quiet_alembic():
                    command.upgrade(alembic_config(conn), "head")
                if conn.dialect.name == "sqlite":  # batch copies ran with foreign keys off
                    bad = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if bad:
                        raise RuntimeError(f"migration left foreign keys broken: {bad[:5]}")
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        finally:
            if conn.dialect.name == "sqlite" and not conn.invalidated:
                conn.exec_driver_sql("PRAGMA foreign_keys=ON")  # the pooled connection's
                conn.commit()
    return MigrationReport(before=before, after=target, adopted=adopted)

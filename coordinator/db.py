"""Engine and sessions. SQLite (WAL) by default at ``data_dir/bnnbench.db``; any SQLAlchemy URL
through ``BNNBENCH_DATABASE_URL`` (e.g. ``postgresql+psycopg://…``). The schema comes from the
Alembic migrations in coordinator/migrations, run when a :class:`Database` opens."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from bnnbench.settings import CoordinatorSettings
from coordinator.migrations import MigrationReport, SchemaVersionError, migrate

log = logging.getLogger("bnnbench.coordinator.db")


def make_engine(settings: CoordinatorSettings) -> Engine:
    url = settings.resolved_database_url()
    if not url.startswith("sqlite"):
        # pre-ping: a pooled connection the server dropped (a restart) is replaced on checkout,
        # so service resumes by itself after an outage; a connection attempt to a server that
        # is down fails within connect_timeout instead of hanging a request or the dispatcher
        return create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 10})
    if url.startswith("sqlite:///") and ":memory:" not in url:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    # request handlers run in a thread pool; each connection is used by one thread at a time
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn, _record) -> None:  # noqa: ANN001 - DB-API connection
        cur = dbapi_conn.cursor()
        # WAL: readers never block the writer; busy_timeout: writers wait instead of failing
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    return engine


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def init_db(engine: Engine) -> MigrationReport:
    """Bring the schema to the newest migration (coordinator.migrations); a database made by
    a newer version raises SchemaVersionError."""
    return migrate(engine)


class Database:
    """Engine + session factory, owned by the app."""

    def __init__(self, settings: CoordinatorSettings) -> None:
        self.engine = make_engine(settings)
        self.sessionmaker = make_sessionmaker(self.engine)
        try:
            self.schema = init_db(self.engine)
        except SchemaVersionError as e:
            log.error("refusing to start: %s", e)
            self.engine.dispose()
            raise
        except BaseException:
            self.engine.dispose()
            raise
        log.info("%s", self.schema.describe())

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on any exception."""
        with self.sessionmaker() as s:
            try:
                yield s
                s.commit()
            except BaseException:
                s.rollback()
                raise

    def dispose(self) -> None:
        self.engine.dispose()

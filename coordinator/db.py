"""Engine and sessions. SQLite (WAL) by default at ``data_dir/bnnbench.db``; any SQLAlchemy URL
through ``BNNBENCH_DATABASE_URL`` (e.g. ``postgresql+psycopg://…``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.orm import Session, sessionmaker

from bnnbench.settings import CoordinatorSettings


def make_engine(settings: CoordinatorSettings) -> Engine:
    url = settings.resolved_database_url()
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
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


def init_db(engine: Engine) -> None:
    from coordinator.models import Base

    Base.metadata.create_all(engine)
    _add_missing_columns(engine)


def _add_missing_columns(engine: Engine) -> None:
    """A database made by an older version gets the columns added since (all nullable or
    with a server default), so it opens in place with nothing lost. A stop-gap until the
    schema has real migrations."""
    from coordinator.models import Base

    insp = inspect(engine)
    with engine.begin() as conn:
        for table in Base.metadata.sorted_tables:
            have = {c["name"] for c in insp.get_columns(table.name)}
            for col in table.columns:
                if col.name in have:
                    continue
                ddl = col.type.compile(dialect=engine.dialect)
                default = ""
                if col.server_default is not None:
                    default = f" DEFAULT {col.server_default.arg}"  # type: ignore[attr-defined]
                conn.execute(
                    text(f'ALTER TABLE {table.name} ADD COLUMN "{col.name}" {ddl}{default}')
                )


class Database:
    """Engine + session factory, owned by the app."""

    def __init__(self, settings: CoordinatorSettings) -> None:
        self.engine = make_engine(settings)
        self.sessionmaker = make_sessionmaker(self.engine)
        init_db(self.engine)

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

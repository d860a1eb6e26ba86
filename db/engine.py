"""Engine and session factory for any SQLAlchemy URL.

SQLite gets the settings a small multi-process app needs: WAL journal (readers do not block the
writer, so the dashboard can read while the bot writes), foreign keys enforced, and a busy timeout so
a second writer waits instead of failing at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 30_000


def make_engine(url: str, *, echo: bool = False) -> Engine:
    """Create an engine; for a SQLite file, create its directory and apply the pragmas."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, echo=echo, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, echo=echo, pool_pre_ping=True)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One transaction: commit on success, roll back on any error."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


@contextmanager
def side_write(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A committed session for a write beside the caller's work that must never wait on the caller's own open
    transaction (SQLite: 0.2 s busy timeout; PostgreSQL: 2 s lock timeout); past that it raises, and the
    caller skips the write."""
    with factory() as session:
        dialect = session.get_bind().dialect.name
        if dialect == "sqlite":
            session.execute(text("PRAGMA busy_timeout = 200"))
        elif dialect == "postgresql":
            session.execute(text("SET LOCAL lock_timeout = '2s'"))
        try:
            yield session
            session.commit()
        finally:
            session.rollback()
            if dialect == "sqlite":
                session.execute(text(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}"))

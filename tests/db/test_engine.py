"""Engine settings and column types."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.orm import Session, sessionmaker

from db.engine import session_scope
from db.models import Company, DailyBar, User


def test_sqlite_runs_in_wal_with_foreign_keys_and_busy_timeout(sqlite_engine: Engine) -> None:
    with sqlite_engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert connection.execute(text("PRAGMA busy_timeout")).scalar() >= 5000


def test_foreign_keys_are_enforced(factory: sessionmaker[Session]) -> None:
    now = datetime(2014, 1, 2, 21, tzinfo=UTC)
    with pytest.raises(IntegrityError):
        with session_scope(factory) as session:
            session.add(DailyBar(ticker="NOPE", date=date(2014, 1, 2), open=1, high=1, low=1, close=1, adj_close=1, volume=1, available_at=now))


def test_check_constraints_refuse_bad_prices(factory: sessionmaker[Session]) -> None:
    now = datetime(2014, 1, 2, 21, tzinfo=UTC)
    with session_scope(factory) as session:
        session.add(Company(ticker="AAA", name="A"))
    with pytest.raises(IntegrityError):
        with session_scope(factory) as session:
            session.add(DailyBar(ticker="AAA", date=date(2014, 1, 2), open=1, high=1, low=2, close=1, adj_close=1, volume=1, available_at=now))


def test_timestamps_round_trip_as_aware_utc(factory: sessionmaker[Session]) -> None:
    eastern = timezone(timedelta(hours=-5))
    stamp = datetime(2015, 3, 6, 16, 0, tzinfo=eastern)
    with session_scope(factory) as session:
        session.add(User(name="u", created_at=stamp))
    with factory() as session:
        user = session.query(User).one()
        assert user.created_at == stamp
        assert user.created_at.tzinfo is not None and user.created_at.utcoffset() == timedelta(0)


def test_naive_timestamps_are_refused(factory: sessionmaker[Session]) -> None:
    with pytest.raises(StatementError, match="naive datetime"):
        with session_scope(factory) as session:
            session.add(User(name="u", created_at=datetime(2015, 1, 1)))
            session.flush()

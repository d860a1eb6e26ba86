"""Alembic migrations: from empty, from an old database holding data, round trips, ORM parity."""

from __future__ import annotations

from datetime import UTC, date, datetime

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, select, text

from db.engine import make_engine, make_session_factory
from db.migrate import current_revision, downgrade, head_revision, revisions, upgrade
from db.models import Base, Company, DailyBar, Fill, Order, TextItem, User


def test_upgrade_from_empty_reaches_head_and_matches_the_orm(db_url: str) -> None:
    engine = make_engine(db_url)
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == [], f"ORM models and migrations differ: {diff}"
    engine.dispose()


def test_upgrade_keeps_data_of_an_old_database(db_url: str) -> None:
    """A database created at the first revision, holding data, upgrades to head with its data intact."""
    first = revisions()[0]
    assert len(revisions()) >= 2, "the upgrade test needs at least two revisions"
    engine = make_engine(db_url)
    upgrade(engine, first)
    assert current_revision(engine) == first
    tables = set(inspect(engine).get_table_names())
    assert "companies" in tables and "users" not in tables
    closed = datetime(2014, 1, 2, 21, 0, tzinfo=UTC)
    with engine.begin() as connection:
        # Written the way the old schema's code would have: plain SQL against the old tables.
        connection.execute(
            text("INSERT INTO companies (ticker, name, sector, exchange, source, created_at) VALUES ('OLD', 'Old Co', 'X', 'XNYS', 'bundle', :t)"),
            {"t": closed if engine.dialect.name != "sqlite" else "2014-01-02 21:00:00"},
        )
        connection.execute(
            text(
                "INSERT INTO daily_bars (ticker, date, open, high, low, close, adj_close, volume, available_at, source, imported_at) "
                "VALUES ('OLD', :d, 10, 11, 9, 10.5, 10.4, 1000, :t, 'bundle', :t)"
            ),
            {"d": date(2014, 1, 2), "t": closed if engine.dialect.name != "sqlite" else "2014-01-02 21:00:00"},
        )
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    factory = make_session_factory(engine)
    with factory() as session:
        bar = session.scalars(select(DailyBar)).one()
        assert (bar.ticker, bar.date, bar.close, bar.available_at) == ("OLD", date(2014, 1, 2), 10.5, closed)
        assert session.get(Company, "OLD").name == "Old Co"
        session.add(User(name="alice"))
        session.commit()
        assert session.scalars(select(User.name)).all() == ["alice"]
    engine.dispose()


def test_downgrade_and_upgrade_round_trip(db_url: str) -> None:
    engine = make_engine(db_url)
    upgrade(engine)
    downgrade(engine, "base")
    assert current_revision(engine) is None
    remaining = set(inspect(engine).get_table_names()) - {"alembic_version"}
    assert remaining == set()
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    engine.dispose()


def test_upgrade_twice_is_a_no_op(db_url: str) -> None:
    engine = make_engine(db_url)
    upgrade(engine)
    upgrade(engine)
    factory = make_session_factory(engine)
    with factory() as session:
        assert session.scalars(select(TextItem)).all() == []
    engine.dispose()


def test_upgrade_rebuilds_orders_while_fills_reference_them(db_url: str) -> None:
    """0004 rebuilds ``orders`` on SQLite; fills pointing at orders must survive with foreign keys on."""
    engine = make_engine(db_url)
    upgrade(engine, "0003")
    factory = make_session_factory(engine)
    filled_at = datetime(2015, 6, 1, 13, 30, tzinfo=UTC)
    with factory() as session:
        user = User(name="bob")
        session.add(user)
        session.flush()
        order = Order(client_order_id="w1-AAPL-buy-0", user_id=user.id, broker="local", ticker="AAPL", side="buy", qty=3.0)
        session.add(order)
        session.flush()
        session.add(Fill(order_id=order.id, broker_fill_id="f1", qty=3.0, price=100.0, filled_at=filled_at))
        session.commit()
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    with factory() as session:
        fill = session.scalars(select(Fill)).one()
        assert (fill.order.client_order_id, fill.price) == ("w1-AAPL-buy-0", 100.0)
        # The same id is now allowed at another broker, but still not twice at one broker.
        session.add(Order(client_order_id="w1-AAPL-buy-0", user_id=fill.order.user_id, broker="alpaca", ticker="AAPL", side="buy", qty=3.0))
        session.commit()
    if engine.dialect.name == "sqlite":
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    engine.dispose()

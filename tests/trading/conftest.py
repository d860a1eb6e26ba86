"""Trading fixtures: a synthetic market with shared views, a user with a profile, a simulated clock."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import date, timedelta
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from advisor import market_calendar
from advisor.config import BrokerSettings
from advisor.data.importer import import_bundle
from advisor.portfolio import RiskParams
from advisor.trading.bot import RebalanceBot
from advisor.trading.factory import make_broker
from advisor.trading.local_broker import SimulatedClock
from db.engine import make_engine, make_session_factory, session_scope
from db.migrate import upgrade
from db.models import ModelVersion, User
from tests.backtest.conftest import write_views
from tests.helpers import make_bundle

FINGERPRINT = "0" * 64
PARAMS = RiskParams(risk_aversion=2.0, max_weight=0.3, max_gross=1.0, cash_buffer=0.05)
WEEK = date(2014, 5, 9)


@pytest.fixture(scope="session")
def trading_template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """The market, the views and the user, built once per session; each test gets a copy (fast)."""
    root = tmp_path_factory.mktemp("trading-template")
    engine = make_engine(f"sqlite:///{root / 'trade.db'}")
    upgrade(engine)
    factory = make_session_factory(engine)
    import_bundle(factory, make_bundle(root / "bundle", tickers=("AAA", "BBB", "CCC", "DDD"), start=date(2013, 10, 1), end=date(2014, 9, 30), tweets_per_session=0), progress=False)
    version_id = write_views(factory, date(2014, 3, 1), date(2014, 8, 29), seed=3)
    with session_scope(factory) as session:
        session.add(User(name="trader"))
    engine.dispose()
    return root / "trade.db", version_id


@pytest.fixture
def trading_db(tmp_path: Path, trading_template: tuple[Path, int]) -> sessionmaker[Session]:
    template, version_id = trading_template
    with closing(sqlite3.connect(template)) as source, closing(sqlite3.connect(tmp_path / "trade.db")) as target:
        source.backup(target)  # a consistent copy, WAL included
    engine = make_engine(f"sqlite:///{tmp_path / 'trade.db'}")
    factory = make_session_factory(engine)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    with session_scope(factory) as session:
        session.get(ModelVersion, version_id).adapter_path = str(adapter)
    return factory


def sim_clock(day: date = WEEK) -> SimulatedClock:
    return SimulatedClock(market_calendar.session_close(day) + timedelta(minutes=5))


def local_bot(factory, clock: SimulatedClock | None = None, settings: BrokerSettings | None = None, params: RiskParams = PARAMS):  # type: ignore[no-untyped-def]
    clock = clock or sim_clock()
    broker = make_broker("local", settings or BrokerSettings(max_order_notional=50_000), factory, 1, params.max_weight, clock=clock)
    return RebalanceBot(factory, broker, 1, params, base_fingerprint=FINGERPRINT), clock

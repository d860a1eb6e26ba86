"""The one place that decides which paper broker runs: the local one or Alpaca paper.

Nothing above this module branches on the broker kind. Live trading is not offered: the Alpaca
adapter refuses any endpoint that is not the paper one.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from advisor import market_calendar
from advisor.config import BrokerSettings
from advisor.errors import ConfigError
from advisor.trading.broker import Broker
from advisor.trading.local_broker import LocalPaperBroker, SimulatedClock
from advisor.trading.safety import Caps, GuardedBroker
from db.queries import last_close


def make_broker(
    kind: str,
    settings: BrokerSettings,
    factory: sessionmaker[Session],
    user_id: int,
    max_weight: float,
    *,
    clock: Callable[[], datetime] = market_calendar.utcnow,
    alpaca_client_options: dict | None = None,
) -> Broker:
    """A guarded paper broker of ``kind`` (``local`` or ``alpaca``) for one user."""
    if kind == "local":
        inner: Broker = LocalPaperBroker(factory, user_id, initial_cash=settings.initial_cash, clock=clock)
    elif kind == "alpaca":
        from advisor.trading.alpaca_broker import AlpacaPaperBroker

        if isinstance(clock, SimulatedClock):
            raise ConfigError("Alpaca paper trades in real time: a historical --as-of date works with the local paper broker only")

        options = {"price_lookup": _store_price(factory, clock), **(alpaca_client_options or {})}
        inner = AlpacaPaperBroker.from_settings(settings, **options)
        inner.clock = clock
    else:
        raise ConfigError(f"unknown broker '{kind}' (use local or alpaca)")
    caps = Caps(settings.max_order_notional, settings.max_daily_notional, max_weight)
    return GuardedBroker(inner, caps, factory, user_id)


def _store_price(factory: sessionmaker[Session], clock: Callable[[], datetime]) -> Callable[[str], float | None]:
    """The last close known now, from the store: how unheld names are priced for the safety caps."""
    def lookup(ticker: str) -> float | None:
        with factory() as session:
            return last_close(session, ticker, clock())

    return lookup

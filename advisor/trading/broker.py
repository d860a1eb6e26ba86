"""The one broker interface the bot talks to, and the values that cross it.

Two implementations: :class:`advisor.trading.local_broker.LocalPaperBroker` (default, offline, fills at
the next bar from the store with the backtest's cost model) and
:class:`advisor.trading.alpaca_broker.AlpacaPaperBroker` (alpaca-py, paper endpoint only). Which one
is used is decided in one place, :func:`advisor.trading.factory.make_broker`; nothing above the
broker branches on it.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from advisor import market_calendar


class Side(StrEnum):
    BUY = "buy"
    SELL = "sell"


class OrderStatus(StrEnum):
    """Broker order states (Alpaca's names); the last four are final."""

    NEW = "new"
    ACCEPTED = "accepted"
    PENDING_NEW = "pending_new"
    PARTIALLY_FILLED = "partially_filled"
    PENDING_CANCEL = "pending_cancel"
    FILLED = "filled"
    CANCELED = "canceled"
    REJECTED = "rejected"
    EXPIRED = "expired"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.REJECTED, OrderStatus.EXPIRED})


@dataclass(frozen=True)
class OrderRequest:
    """A market order. Exactly one of ``qty`` (shares, may be fractional) and ``notional`` (USD)."""

    client_order_id: str
    ticker: str
    side: Side
    qty: float | None = None
    notional: float | None = None
    time_in_force: str = "day"

    def __post_init__(self) -> None:
        if (self.qty is None) == (self.notional is None):
            raise ValueError("give exactly one of qty and notional")
        if (self.qty is not None and not self.qty > 0) or (self.notional is not None and not self.notional > 0):
            raise ValueError("qty / notional must be positive (the side gives the direction)")


@dataclass(frozen=True)
class BrokerFill:
    fill_id: str
    qty: float
    price: float
    commission: float
    filled_at: datetime


@dataclass(frozen=True)
class BrokerOrder:
    broker_order_id: str
    client_order_id: str
    ticker: str
    side: Side
    qty: float | None
    notional: float | None
    status: OrderStatus
    filled_qty: float = 0.0
    filled_avg_price: float | None = None
    submitted_at: datetime | None = None
    updated_at: datetime | None = None
    reject_reason: str | None = None
    fills: tuple[BrokerFill, ...] = field(default=())


@dataclass(frozen=True)
class BrokerPosition:
    ticker: str
    qty: float
    avg_entry_price: float
    market_value: float | None = None


@dataclass(frozen=True)
class Account:
    cash: float
    equity: float
    buying_power: float
    currency: str = "USD"


@dataclass(frozen=True)
class MarketClock:
    timestamp: datetime
    is_open: bool
    next_open: datetime | None
    next_close: datetime | None


class Broker(ABC):
    """What the bot needs from a paper broker. Implementations raise the errors of
    :mod:`advisor.trading.errors` and never retry order creation on their own."""

    name: str
    supports_fractional: bool = True
    #: What "now" is for this broker: the real time, or a simulated clock in historical paper trading.
    clock: Callable[[], datetime] = staticmethod(market_calendar.utcnow)

    def wait(self, seconds: float) -> None:
        """Let time pass while orders are polled (a simulated clock moves to the next session open)."""
        time.sleep(seconds)

    @property
    def max_order_notional(self) -> float | None:
        """The per-order notional cap guarding this broker, if any: the bot slices larger trades under it."""
        return None

    @abstractmethod
    def submit_order(self, request: OrderRequest) -> BrokerOrder: ...

    @abstractmethod
    def cancel_order(self, broker_order_id: str) -> None: ...

    @abstractmethod
    def get_order_by_client_id(self, client_order_id: str) -> BrokerOrder | None:
        """The order with this client id, or None when the broker has never seen it."""

    @abstractmethod
    def list_open_orders(self) -> list[BrokerOrder]: ...

    @abstractmethod
    def get_positions(self) -> list[BrokerPosition]: ...

    @abstractmethod
    def get_account(self) -> Account: ...

    @abstractmethod
    def get_clock(self) -> MarketClock: ...

    def latest_price(self, ticker: str) -> float | None:
        """A recent price for sizing (last close); None when unknown. Optional."""
        return None

"""Safety at the broker layer: caps checked on every order, whatever computed it.

:class:`GuardedBroker` wraps any :class:`Broker`. Before an order goes out it checks, with the price the
broker reports (last close) and the current account:
  * the order's notional against the per-order cap;
  * the notional already sent today (exchange date, from the database) plus this order against the
    per-day cap;
  * the position the order would leave against the profile's max weight per name (with a small
    tolerance for price moves between sizing and sending).
A breach raises :class:`OrderBlockedError` (a rejection: recorded, and the rebalance goes on); nothing
is sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from advisor import market_calendar
from advisor.trading.broker import Account, Broker, BrokerOrder, BrokerPosition, MarketClock, OrderRequest, Side
from advisor.trading.errors import OrderRejectedError
from advisor.trading.intent import OrderIntent
from db.models import Order

WEIGHT_TOLERANCE = 0.02


class OrderBlockedError(OrderRejectedError):
    """A safety cap stopped the order before it was sent."""


@dataclass(frozen=True)
class Caps:
    max_order_notional: float
    max_daily_notional: float
    max_weight: float


class GuardedBroker(Broker):
    def __init__(self, inner: Broker, caps: Caps, factory: sessionmaker[Session], user_id: int) -> None:
        self.inner = inner
        self.caps = caps
        self.factory = factory
        self.user_id = user_id
        self.clock = inner.clock
        self.name = inner.name
        self.supports_fractional = inner.supports_fractional

    def notional_sent_today(self, session: Session, now: datetime) -> float:
        today = market_calendar.exchange_today(now)
        start = datetime.combine(today, datetime.min.time(), tzinfo=now.tzinfo) - timedelta(hours=6)
        rows = session.execute(
            select(Order.intent, Order.submitted_at).where(
                Order.user_id == self.user_id, Order.broker == self.inner.name, Order.submitted_at.is_not(None), Order.submitted_at >= start
            )
        ).all()
        return sum(OrderIntent.load(intent).notional_estimate for intent, submitted in rows if market_calendar.exchange_today(submitted) == today)

    def check(self, request: OrderRequest) -> float:
        """The order's estimated notional; raises OrderBlockedError on any breach."""
        price = self.inner.latest_price(request.ticker)
        if request.notional is not None:
            notional = request.notional
        elif price is not None:
            notional = abs(request.qty or 0.0) * price
        else:
            raise OrderBlockedError(f"no price for {request.ticker}: cannot check the order against the caps")
        if notional > self.caps.max_order_notional + 1e-6:
            raise OrderBlockedError(f"{request.ticker}: order notional {notional:,.2f} exceeds the per-order cap {self.caps.max_order_notional:,.2f}")
        with self.factory() as session:
            sent = self.notional_sent_today(session, self.clock())
        if sent + notional > self.caps.max_daily_notional + 1e-6:
            raise OrderBlockedError(
                f"{request.ticker}: {sent:,.2f} already sent today; this order ({notional:,.2f}) would exceed the daily cap "
                f"{self.caps.max_daily_notional:,.2f}"
            )
        if price is not None:
            account = self.inner.get_account()
            current = next((p.qty for p in self.inner.get_positions() if p.ticker == request.ticker), 0.0)
            qty = request.qty if request.qty is not None else notional / price
            after = current + (qty if request.side is Side.BUY else -qty)
            weight = abs(after) * price / account.equity if account.equity > 0 else float("inf")
            if weight > self.caps.max_weight + WEIGHT_TOLERANCE:
                raise OrderBlockedError(
                    f"{request.ticker}: the position would be {weight:.1%} of equity, above the profile's max weight {self.caps.max_weight:.0%}"
                )
        return notional

    def submit_order(self, request: OrderRequest) -> BrokerOrder:
        self.check(request)
        return self.inner.submit_order(request)

    def cancel_order(self, broker_order_id: str) -> None:
        self.inner.cancel_order(broker_order_id)

    def get_order_by_client_id(self, client_order_id: str) -> BrokerOrder | None:
        return self.inner.get_order_by_client_id(client_order_id)

    def list_open_orders(self) -> list[BrokerOrder]:
        return self.inner.list_open_orders()

    def get_positions(self) -> list[BrokerPosition]:
        return self.inner.get_positions()

    def get_account(self) -> Account:
        return self.inner.get_account()

    def get_clock(self) -> MarketClock:
        return self.inner.get_clock()

    def latest_price(self, ticker: str) -> float | None:
        return self.inner.latest_price(ticker)

    def wait(self, seconds: float) -> None:
        self.inner.wait(seconds)

    @property
    def max_order_notional(self) -> float | None:
        return self.caps.max_order_notional


"""The built-in local paper broker (the default): offline, persistent, honest about fills.

Its book lives in the database: the account in ``paper_accounts``, orders in ``orders`` (the broker-
mirrored columns: broker order id, status, filled quantity and price), fills in ``fills`` and positions
in ``positions`` (authoritative for this broker). A market order fills at the **open of the first
bar whose session opens after the order was submitted** — the same "next bar's open" rule as the
backtest, priced by the same cost model (:class:`advisor.execution.CostModel`: slippage within the
bar's range, commission in basis points). A buy that would take cash below zero is rejected (no margin); sells may open shorts.
Until that bar exists in the store the order stays accepted.

Time comes from a clock: the real one, or a :class:`SimulatedClock` that starts at a historical
decision time and that :meth:`LocalPaperBroker.wait` moves forward to the next session open — how the
demo and tests trade a week from the offline bundle.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import date, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from advisor import market_calendar
from advisor.errors import DataUnavailableError
from advisor.execution import CostModel
from advisor.trading.broker import (
    Account,
    Broker,
    BrokerFill,
    BrokerOrder,
    BrokerPosition,
    MarketClock,
    OrderRequest,
    OrderStatus,
    Side,
)
from advisor.trading.errors import DuplicateClientOrderIdError, OrderRejectedError
from advisor.trading.intent import OrderIntent
from db.engine import session_scope
from db.models import Company, DailyBar, Fill, Order, PaperAccount, Position
from db.queries import last_close

BROKER = "local"


class SimulatedClock:
    """A clock that stands still until moved (historical paper trading)."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance_to(self, moment: datetime) -> None:
        self.now = max(self.now, moment)


class LocalPaperBroker(Broker):
    name = BROKER
    supports_fractional = True

    def __init__(
        self,
        factory: sessionmaker[Session],
        user_id: int,
        *,
        initial_cash: float = 100_000.0,
        costs: CostModel = CostModel(),
        clock: Callable[[], datetime] = market_calendar.utcnow,
    ) -> None:
        self.factory = factory
        self.user_id = user_id
        self.initial_cash = initial_cash
        self.costs = costs
        self.clock = clock

    # ------------------------------------------------------------------ account

    def _account(self, session: Session) -> PaperAccount:
        account = session.scalar(select(PaperAccount).where(PaperAccount.user_id == self.user_id, PaperAccount.broker == BROKER))
        if account is None:
            account = PaperAccount(user_id=self.user_id, broker=BROKER, cash=self.initial_cash, initial_cash=self.initial_cash)
            session.add(account)
            session.flush()
        return account

    def latest_price(self, ticker: str) -> float | None:
        with self.factory() as session:
            return last_close(session, ticker, self.clock())

    def get_account(self) -> Account:
        self._match()
        now = self.clock()
        with self.factory() as session:  # read only: an account is opened by the first order, not by a look
            account = session.scalar(select(PaperAccount).where(PaperAccount.user_id == self.user_id, PaperAccount.broker == BROKER))
            cash = account.cash if account is not None else self.initial_cash
            value = 0.0
            for position in self._positions(session):
                price = last_close(session, position.ticker, now) or position.avg_entry_price
                value += position.qty * price
            return Account(cash=cash, equity=cash + value, buying_power=max(cash, 0.0))

    # ------------------------------------------------------------------ orders

    def submit_order(self, request: OrderRequest) -> BrokerOrder:
        now = self.clock()
        with session_scope(self.factory) as session:
            row = session.scalar(select(Order).where(Order.client_order_id == request.client_order_id, Order.broker == BROKER))
            if row is not None and row.broker_order_id is not None:
                raise DuplicateClientOrderIdError(request.client_order_id)
            if session.get(Company, request.ticker) is None:
                raise OrderRejectedError(f"{request.ticker} is not a known ticker")
            if request.qty is None:
                price = last_close(session, request.ticker, now)
                if price is None:
                    raise OrderRejectedError(f"no price for {request.ticker} to turn a notional order into shares")
                qty = request.notional / price  # type: ignore[operator]
            else:
                qty = request.qty
            if row is None:  # an order the bot did not write first (e.g. placed by hand): keep a record
                row = Order(client_order_id=request.client_order_id, user_id=self.user_id, broker=BROKER, ticker=request.ticker,
                            side=request.side.value, qty=request.qty, notional=request.notional, adopted=True)
                session.add(row)
            row.broker_order_id = f"local-{uuid.uuid4().hex[:16]}"
            row.status = OrderStatus.ACCEPTED.value
            row.submitted_at = now
            row.intent = OrderIntent.load(row.intent).model_copy(update={"broker_qty": qty}).dump()
            session.flush()
        self._match()
        found = self.get_order_by_client_id(request.client_order_id)
        assert found is not None
        return found

    def cancel_order(self, broker_order_id: str) -> None:
        with session_scope(self.factory) as session:
            row = session.scalar(select(Order).where(Order.broker_order_id == broker_order_id, Order.broker == BROKER))
            if row is not None and not OrderStatus(row.status).is_final:
                row.status = OrderStatus.CANCELED.value

    def get_order_by_client_id(self, client_order_id: str) -> BrokerOrder | None:
        self._match()
        with self.factory() as session:
            row = session.scalar(select(Order).where(Order.client_order_id == client_order_id, Order.broker == BROKER))
            if row is None or row.broker_order_id is None:
                return None  # never submitted: the broker has not seen it
            return self._to_broker_order(row)

    def list_open_orders(self) -> list[BrokerOrder]:
        self._match()
        with self.factory() as session:
            rows = session.scalars(
                select(Order).where(Order.user_id == self.user_id, Order.broker == BROKER, Order.broker_order_id.is_not(None)).order_by(Order.id)
            )
            return [self._to_broker_order(r) for r in rows if not OrderStatus(r.status).is_final]

    def _to_broker_order(self, row: Order) -> BrokerOrder:
        fills = tuple(BrokerFill(f.broker_fill_id, f.qty, f.price, f.commission, f.filled_at) for f in row.fills)
        return BrokerOrder(
            broker_order_id=row.broker_order_id or "", client_order_id=row.client_order_id, ticker=row.ticker, side=Side(row.side),
            qty=row.qty, notional=row.notional, status=OrderStatus(row.status), filled_qty=row.filled_qty,
            filled_avg_price=row.filled_avg_price, submitted_at=row.submitted_at, updated_at=row.updated_at,
            reject_reason=row.error if row.status == OrderStatus.REJECTED.value else None, fills=fills,
        )

    # ------------------------------------------------------------------ positions

    def _positions(self, session: Session) -> list[Position]:
        return list(session.scalars(select(Position).where(Position.user_id == self.user_id, Position.broker == BROKER, Position.qty != 0)))

    def get_positions(self) -> list[BrokerPosition]:
        self._match()
        now = self.clock()
        with self.factory() as session:
            out = []
            for p in self._positions(session):
                price = last_close(session, p.ticker, now)
                out.append(BrokerPosition(p.ticker, p.qty, p.avg_entry_price, None if price is None else p.qty * price))
            return out

    # ------------------------------------------------------------------ time

    def get_clock(self) -> MarketClock:
        now = self.clock()
        today = market_calendar.exchange_today(now)
        is_open = market_calendar.is_market_open(now)
        next_session = today if market_calendar.is_session(today) and now < market_calendar.session_open(today) else market_calendar.next_session_after(today)
        session_day = today if market_calendar.is_session(today) and now < market_calendar.session_close(today) else next_session
        return MarketClock(now, is_open, market_calendar.session_open(next_session), market_calendar.session_close(session_day))

    def wait(self, seconds: float) -> None:
        """Real clock: sleep. Simulated clock: jump to the next session open (when fills can happen)."""
        if isinstance(self.clock, SimulatedClock):
            now = self.clock()
            today = market_calendar.exchange_today(now)
            day = today if market_calendar.is_session(today) and now < market_calendar.session_open(today) else market_calendar.next_session_after(today)
            self.clock.advance_to(market_calendar.session_open(day) + timedelta(minutes=1))
        else:
            time.sleep(seconds)

    # ------------------------------------------------------------------ matching

    def _fill_day(self, submitted_at: datetime) -> date:
        """The first session that opens after the order was submitted."""
        day = market_calendar.exchange_today(submitted_at)
        if market_calendar.is_session(day) and submitted_at < market_calendar.session_open(day):
            return day
        return market_calendar.next_session_after(day)

    def _match(self) -> None:
        """Fill every accepted order whose fill bar has opened (by the clock) and exists in the store."""
        now = self.clock()
        with session_scope(self.factory) as session:
            pending = session.scalars(
                select(Order).where(Order.user_id == self.user_id, Order.broker == BROKER,
                                    Order.status.in_([OrderStatus.ACCEPTED.value, OrderStatus.NEW.value])).order_by(Order.submitted_at, Order.id)
            ).all()
            if not pending:
                return
            account = self._account(session)
            for order in pending:
                if order.submitted_at is None:
                    continue  # accepted orders always carry their submission time
                try:
                    day = self._fill_day(order.submitted_at)
                    opens = market_calendar.session_open(day)
                except DataUnavailableError:
                    continue
                if now < opens:
                    continue
                bar = session.scalar(select(DailyBar).where(DailyBar.ticker == order.ticker, DailyBar.date >= day).order_by(DailyBar.date).limit(1))
                if bar is None or market_calendar.session_open(bar.date) > now:
                    continue  # no bar yet: the order waits (halted name, or data not synced)
                self._fill(session, account, order, bar, now)

    def _fill(self, session: Session, account: PaperAccount, order: Order, bar: DailyBar, now: datetime) -> None:
        qty = float(OrderIntent.load(order.intent).broker_qty or order.qty or 0.0)
        buy = order.side == Side.BUY.value
        price = self.costs.fill_price(bar.open, bar.high, bar.low, buy=buy)
        commission = self.costs.commission_for(qty, price)
        cash_after = account.cash - qty * price - commission if buy else account.cash + qty * price - commission
        position = session.scalar(select(Position).where(Position.user_id == self.user_id, Position.broker == BROKER, Position.ticker == order.ticker))
        current = position.qty if position else 0.0
        opening_buy = buy and current >= 0
        if opening_buy and cash_after < 0:
            order.status = OrderStatus.REJECTED.value
            order.error = f"insufficient buying power: needs {qty * price + commission:,.2f}, cash {account.cash:,.2f}"
            return
        filled_at = market_calendar.session_open(bar.date)
        account.cash = cash_after
        signed = qty if buy else -qty
        if position is None:
            position = Position(user_id=self.user_id, broker=BROKER, ticker=order.ticker, qty=0.0, avg_entry_price=price)
            session.add(position)
        new_qty = current + signed
        if current == 0 or (current > 0) == (signed > 0):  # opening or adding: average in
            position.avg_entry_price = (abs(current) * position.avg_entry_price + abs(signed) * price) / abs(new_qty)
        elif abs(signed) > abs(current):  # flipped through zero: the remainder opens at this price
            position.avg_entry_price = price
        position.qty = 0.0 if abs(new_qty) < 1e-9 else new_qty
        order.status = OrderStatus.FILLED.value
        order.filled_qty = qty
        order.filled_avg_price = price
        session.add(Fill(order_id=order.id, broker_fill_id=f"{order.broker_order_id}-1", qty=qty, price=price, commission=commission, filled_at=filled_at))
        session.flush()

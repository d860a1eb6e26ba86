"""The rebalance bot: follow a user's active views on a paper account, never losing or doubling an order.

One run (``run_once``):
  1. **Kill switch** checked first (and before every send and every poll).
  2. **Reconcile.** Every order of this user and broker that is not final is looked up at the broker
     by its client order id and updated; an intent the broker never saw is sent later in this run if
     it belongs to the current decision week, and expired otherwise; open orders at the broker that
     the database does not know are adopted (recorded with ``adopted``) and reported.
  3. **Plan** — unless this decision week was already sent: the user's views for the week (their
     active model version) -> target weights with the same portfolio function as the backtest ->
     difference with the broker's positions -> orders (sells first; whole shares where the broker has
     no fractional trading; below the minimum notional skipped). A sign flip is a close then an open.
     An order above the broker's per-order cap is split into slices (sequence 0, 1, ...), each under it.
     A week with no view at all plans nothing (it is not a signal to sell everything).
  4. **Write intents first**, each with a deterministic client order id
     ``rb-u{user}-{week}-{ticker}-{side}-{sequence}``, in one transaction, before anything is sent.
     A planned order whose id the broker already has (adopted in step 2: placed by a process that
     crashed before recording it) is that order: it is claimed for the week and not sent again.
  5. **Send.** A temporary failure is never retried blindly: the order is looked up by client id;
     found means it was placed; confirmed absent means it may be sent once more. A duplicate id means
     the broker already has it (adopt it). A rejection (or a safety cap) is recorded and the run goes
     on (also when the one send after a confirmed absence is refused); an operational error stops the run.
  6. **Poll** until every order is final or the poll time is over; record fills and mirror positions.
A second run for the same week sends nothing new. ``dry_run`` returns the plan and sends and records no order.
Every decision is logged as a :class:`db.models.BotEvent`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from advisor import market_calendar
from advisor.data.store import SqlMarketStore
from advisor.data.windows import weekly_decision_dates
from advisor.errors import AdvisorError
from advisor.execution import plan_orders
from advisor.forecaster.service import expected_return_pct, load_views
from advisor.forecaster.versions import serving_version
from advisor.portfolio import RiskParams, target_weights, trailing_daily_volatility
from advisor.trading.broker import Broker, BrokerOrder, OrderRequest, OrderStatus, Side
from advisor.trading.errors import (
    DuplicateClientOrderIdError,
    OperationalBrokerError,
    OrderRejectedError,
    TemporaryBrokerError,
)
from db.engine import session_scope
from db.locks import exclusive
from db.models import BotEvent, BotState, Fill, Order, Position
from db.types import utcnow

SLICE_HEADROOM = 0.98  # slices stay 2% under the per-order cap: the price may move between planning and the check
OPEN_STATUSES = ("intent", "new", "accepted", "pending_new", "partially_filled", "pending_cancel")


class BotKilledError(AdvisorError):
    """The kill switch is on for this user and broker."""


@dataclass(frozen=True)
class RebalanceOptions:
    tickers: tuple[str, ...] | None = None
    dry_run: bool = False
    min_notional: float = 50.0
    poll_timeout_s: float = 60.0
    poll_interval_s: float = 2.0


@dataclass
class PlannedTrade:
    ticker: str
    side: Side
    qty: float
    price: float
    target_weight: float
    current_qty: float
    sequence: int = 0

    @property
    def notional(self) -> float:
        return self.qty * self.price


@dataclass
class RunReport:
    user_id: int
    broker: str
    decision_week: date | None
    equity: float | None = None
    planned: list[PlannedTrade] = field(default_factory=list)
    sent: list[str] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)
    final: dict[str, str] = field(default_factory=dict)
    adopted: list[str] = field(default_factory=list)
    reconciled: dict[str, str] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)
    dry_run: bool = False


def client_order_id(user_id: int, week: date, ticker: str, side: Side, sequence: int) -> str:
    return f"rb-u{user_id}-{week:%Y%m%d}-{ticker}-{side.value}-{sequence}"


def user_prefix(user_id: int) -> str:
    return f"rb-u{user_id}-"


class RebalanceBot:
    def __init__(
        self, factory: sessionmaker[Session], broker: Broker, user_id: int, params: RiskParams, *,
        base_fingerprint: str | None = None, clock: Callable[[], datetime] | None = None,
        sleep: Callable[[float], None] | None = None,
        generate_views: Callable[[date, tuple[str, ...]], None] | None = None,
    ) -> None:
        self.factory = factory
        self.broker = broker
        self.user_id = user_id
        self.params = params
        self.base_fingerprint = base_fingerprint
        self.clock = clock or broker.clock
        self._sleep = sleep or broker.wait
        self.generate_views = generate_views  # forecasts missing views with the user's active model

    # ------------------------------------------------------------------ bookkeeping

    def log(self, message: str, level: str = "info", **data: Any) -> None:
        with session_scope(self.factory) as session:
            session.add(BotEvent(user_id=self.user_id, broker=self.broker.name, level=level, message=message, data=data))

    def state(self, session: Session) -> BotState:
        row = session.scalar(select(BotState).where(BotState.user_id == self.user_id, BotState.broker == self.broker.name))
        if row is None:
            row = BotState(user_id=self.user_id, broker=self.broker.name, status="stopped")
            session.add(row)
            session.flush()
        return row

    def check_not_backwards(self, week: date) -> None:
        """Refuse a decision week before the last one traded: its fills would be dated before fills already made."""
        with self.factory() as session:
            last = session.scalar(select(BotState.last_decision_week).where(BotState.user_id == self.user_id, BotState.broker == self.broker.name))
        if last is not None and week < last:
            raise AdvisorError(f"week {week} is before the last week this account traded ({last}): the bot only moves forward; "
                               "use a later --as-of, or another user for a historical replay")

    def killed(self) -> bool:
        with self.factory() as session:  # read only: a bot that never ran has no state row and is not killed
            row = session.scalar(select(BotState).where(BotState.user_id == self.user_id, BotState.broker == self.broker.name))
            return bool(row is not None and row.kill_requested)

    def ensure_alive(self) -> None:
        if self.killed():
            raise BotKilledError(f"the kill switch is on for user {self.user_id} on {self.broker.name}: run 'advisor trade run --resume' to clear it")

    def decision_week(self, now: datetime) -> date | None:
        """The newest weekly decision session whose close has passed."""
        today = market_calendar.exchange_today(now)
        closed = [d for d in weekly_decision_dates(today - timedelta(days=14), today) if market_calendar.session_close(d) <= now]
        return closed[-1] if closed else None

    # ------------------------------------------------------------------ reconcile

    def _apply(self, session: Session, row: Order, found: BrokerOrder) -> None:
        """Copy the broker's view of an order into the broker-mirrored columns, and record new fills."""
        previous_qty, previous_price = row.filled_qty or 0.0, row.filled_avg_price or 0.0
        row.broker_order_id = found.broker_order_id
        row.status = found.status.value
        row.filled_qty = found.filled_qty
        row.filled_avg_price = found.filled_avg_price
        if found.reject_reason:
            row.error = found.reject_reason
        if row.submitted_at is None:
            row.submitted_at = found.submitted_at or self.clock()
        known = {f.broker_fill_id for f in session.scalars(select(Fill).where(Fill.order_id == row.id))}
        if found.fills:
            for fill in found.fills:
                if fill.fill_id not in known:
                    session.add(Fill(order_id=row.id, broker_fill_id=fill.fill_id, qty=fill.qty, price=fill.price, commission=fill.commission, filled_at=fill.filled_at))
        elif found.filled_qty > previous_qty + 1e-12 and found.filled_avg_price:
            # The broker reports cumulative quantity and average price: derive the new fill from the change.
            delta = found.filled_qty - previous_qty
            price = (found.filled_qty * found.filled_avg_price - previous_qty * previous_price) / delta
            fill_id = f"{found.broker_order_id}:{found.filled_qty:.9f}"
            if fill_id not in known:
                session.add(Fill(order_id=row.id, broker_fill_id=fill_id, qty=delta, price=price, commission=0.0, filled_at=found.updated_at or self.clock()))

    def reconcile(self, report: RunReport, week: date | None) -> list[int]:
        """Bring every open order up to date; returns ids of intents still to send this week."""
        to_send: list[int] = []
        with session_scope(self.factory) as session:
            rows = session.scalars(
                select(Order).where(Order.user_id == self.user_id, Order.broker == self.broker.name, Order.status.in_(OPEN_STATUSES)).order_by(Order.id)
            ).all()
            ids = [(r.id, r.client_order_id, r.status, r.decision_week) for r in rows]
        for order_id, cid, status, order_week in ids:
            found = self.broker.get_order_by_client_id(cid)
            with session_scope(self.factory) as session:
                row = session.get(Order, order_id)
                assert row is not None
                if found is not None:
                    self._apply(session, row, found)
                    report.reconciled[cid] = found.status.value
                elif status == "intent" and order_week == week:
                    to_send.append(order_id)
                    report.reconciled[cid] = "intent, not yet at the broker: will send"
                elif status == "intent":
                    row.status = OrderStatus.EXPIRED.value
                    row.error = "intent from an earlier week that never reached the broker; not sent late"
                    report.reconciled[cid] = "expired (stale intent)"
                else:
                    row.error = "the broker does not know this order"
                    report.reconciled[cid] = "missing at the broker"
        known = set()
        with self.factory() as session:
            known = set(session.scalars(select(Order.client_order_id).where(Order.broker == self.broker.name)))
        for found in self.broker.list_open_orders():
            if found.client_order_id in known:
                continue
            with session_scope(self.factory) as session:
                row = Order(
                    client_order_id=found.client_order_id, user_id=self.user_id, broker=self.broker.name, ticker=found.ticker,
                    side=found.side.value, qty=found.qty, notional=found.notional, adopted=True, status=found.status.value,
                    intent={"adopted": True},
                )
                session.add(row)
                session.flush()
                self._apply(session, row, found)
            report.adopted.append(found.client_order_id)
            self.log(f"adopted an order the bot did not place: {found.client_order_id}", "warning", ticker=found.ticker)
        return to_send

    # ------------------------------------------------------------------ plan

    def views(self, session: Session, week: date, tickers: tuple[str, ...] | None) -> dict[str, float | None]:
        if self.base_fingerprint is None:
            raise AdvisorError("the bot needs the base model's fingerprint to find the user's views")
        version = serving_version(session, self.user_id, self.base_fingerprint)
        if version is None:
            raise AdvisorError("no model version serves this user yet: train one (advisor train sft) and forecast first")
        rows = load_views(session, version.id, self.user_id, week, week, include_shared=True).get(week, {})
        names = tickers or tuple(sorted(rows))
        return {t: (expected_return_pct(rows[t]) if t in rows else None) for t in names}

    def stored_view_count(self, session: Session, week: date) -> int:
        """How many views the user's serving model has for the week, signals or not."""
        version = serving_version(session, self.user_id, self.base_fingerprint or "")
        return len(load_views(session, version.id, self.user_id, week, week, include_shared=True).get(week, {})) if version else 0

    def plan(self, week: date, options: RebalanceOptions, report: RunReport) -> list[PlannedTrade]:
        as_of = market_calendar.session_close(week)
        if self.generate_views is not None and options.tickers:
            with self.factory() as session:
                have = self.views(session, week, options.tickers)
            missing = tuple(t for t, v in have.items() if v is None)
            if missing and options.dry_run:  # a dry run writes nothing, views included
                report.messages.append(f"no view yet for {', '.join(missing)} (week {week}): a real run generates them first")
            elif missing:
                self.generate_views(week, missing)
                self.log(f"generated views for {', '.join(missing)} (week {week})")
        with self.factory() as session:
            views = self.views(session, week, options.tickers)
            store = SqlMarketStore(session)
            vols, prices = {}, {}
            for ticker in views:
                bars = store.bars(ticker, as_of, start=week - timedelta(days=120)) if store.date_range(ticker) else None
                vols[ticker] = trailing_daily_volatility(bars["adj_close"]) if bars is not None and len(bars) else None
                prices[ticker] = float(bars["close"].iloc[-1]) if bars is not None and len(bars) else None
        if not any(v is not None for v in views.values()):
            # No usable view at all for the week (not forecast yet, or every view unparsed or failed by
            # the view checker): that is missing data, not a call to sell everything. Nothing is planned
            # or recorded, so a later run, once usable views exist, trades.
            with self.factory() as session:
                stored = self.stored_view_count(session, week)
            if stored:
                report.messages.append(
                    f"none of the {stored} views for week {week} is a signal (unparsed, or failed the view checker): "
                    "nothing planned, positions left as they are"
                )
            else:
                report.messages.append(f"no views for week {week}: nothing planned, positions left as they are (forecast the week first)")
            return []
        unusable = [t for t, v in views.items() if v is None]
        if unusable:
            report.messages.append(f"no usable view this week for {', '.join(unusable)}: no position")
        weights = target_weights(views, vols, self.params)
        account = self.broker.get_account()
        report.equity = account.equity
        positions = {p.ticker: p.qty for p in self.broker.get_positions()}
        prices_now: dict[str, float] = {}
        for ticker in sorted(set(weights) | set(positions)):
            price = self.broker.latest_price(ticker) or prices.get(ticker)
            if price is None or not price > 0:
                report.messages.append(f"{ticker}: no price, not traded")
            else:
                prices_now[ticker] = price
        # The product's one order planner (the backtest's): closes and reductions, then new shorts, then new longs.
        trades: list[PlannedTrade] = []
        for order in plan_orders(weights, account.equity, prices_now, positions, options.min_notional, self._round):
            side = Side.BUY if order.qty > 0 else Side.SELL
            price = prices_now[order.ticker]
            for qty in self._slices(abs(order.qty), price):
                sequence = sum(1 for t in trades if t.ticker == order.ticker and t.side is side)
                trades.append(PlannedTrade(order.ticker, side, qty, price, weights.get(order.ticker, 0.0), positions.get(order.ticker, 0.0), sequence))
        return trades

    def _slices(self, qty: float, price: float) -> list[float]:
        """One trade split into orders under the broker's per-order cap (each slice gets its own sequence number
        and client order id), so a large rebalance goes through instead of being blocked whole."""
        cap = self.broker.max_order_notional
        if cap is None or qty * price <= cap * SLICE_HEADROOM:
            return [qty]
        count = math.ceil(qty * price / (cap * SLICE_HEADROOM))
        if self.broker.supports_fractional:
            size = round(qty / count, 6)
            return [size] * (count - 1) + [round(qty - size * (count - 1), 6)]
        base, extra = divmod(int(qty), count)
        return [float(base + (1 if i < extra else 0)) for i in range(count) if base + (1 if i < extra else 0) > 0]

    def _round(self, qty: float) -> float:
        if self.broker.supports_fractional:
            return round(qty, 6)
        return float(math.trunc(qty))

    def week_already_sent(self, week: date) -> bool:
        with self.factory() as session:
            return session.scalar(
                select(Order.id).where(Order.user_id == self.user_id, Order.broker == self.broker.name, Order.decision_week == week,
                                       Order.adopted.is_(False)).limit(1)
            ) is not None

    # ------------------------------------------------------------------ send and poll

    def write_intents(self, week: date, trades: list[PlannedTrade]) -> list[int]:
        """Record the plan as intents; returns the ids to send (an order the broker already has is not among them)."""
        ids = []
        claimed = []
        with session_scope(self.factory) as session:
            for trade in trades:
                cid = client_order_id(self.user_id, week, trade.ticker, trade.side, trade.sequence)
                intent = {"target_weight": trade.target_weight, "price_ref": trade.price, "current_qty": trade.current_qty,
                          "notional_estimate": trade.notional}
                existing = session.scalar(select(Order).where(Order.client_order_id == cid, Order.broker == self.broker.name))
                if existing is not None and existing.adopted and existing.user_id == self.user_id:
                    # The broker already holds an order with this trade's deterministic id (reconcile adopted it:
                    # a process placed it, then crashed before its intent was recorded). It *is* this trade:
                    # claim it for the week, keep the broker's quantity, and never send it a second time.
                    existing.decision_week, existing.sequence, existing.adopted = week, trade.sequence, False
                    existing.intent = {**intent, "adopted": True}
                    claimed.append(cid)
                    continue
                row = Order(
                    client_order_id=cid, user_id=self.user_id, broker=self.broker.name, decision_week=week, ticker=trade.ticker,
                    side=trade.side.value, sequence=trade.sequence, qty=trade.qty, status="intent", intent=intent,
                )
                session.add(row)
                session.flush()
                ids.append(row.id)
        for cid in claimed:
            self.log(f"{cid} was already at the broker: claimed for week {week}, not sent again", "warning")
        return ids

    def send(self, order_id: int, report: RunReport) -> None:
        self.ensure_alive()
        with self.factory() as session:
            row = session.get(Order, order_id)
            assert row is not None
            request = OrderRequest(row.client_order_id, row.ticker, Side(row.side), qty=row.qty)
        found: BrokerOrder | None
        try:
            try:
                found = self.broker.submit_order(request)
            except DuplicateClientOrderIdError:
                found = self.broker.get_order_by_client_id(request.client_order_id)
                self.log(f"{request.client_order_id} already at the broker: adopted its state", "warning")
            except TemporaryBrokerError as exc:
                found = self._resolve_after_failure(request, exc)  # its one send after a confirmed absence may be refused
        except OrderRejectedError as exc:
            with session_scope(self.factory) as session:
                row = session.get_one(Order, order_id)
                row.status, row.error = OrderStatus.REJECTED.value, str(exc)
            report.rejected[request.client_order_id] = str(exc)
            self.log(f"{request.client_order_id} rejected: {exc}", "warning")
            return
        if found is None:
            report.messages.append(f"{request.client_order_id}: broker unreachable; the intent stays and is sent on the next run")
            return
        with session_scope(self.factory) as session:
            row = session.get_one(Order, order_id)
            self._apply(session, row, found)
        report.sent.append(request.client_order_id)
        self.log(f"sent {request.side.value} {request.qty:g} {request.ticker} ({request.client_order_id})", ticker=request.ticker)

    def _resolve_after_failure(self, request: OrderRequest, exc: TemporaryBrokerError) -> BrokerOrder | None:
        """After a failed send: look the order up; only a confirmed absence allows one more send."""
        self.log(f"{request.client_order_id}: send failed ({exc}); looking it up by client order id", "warning")
        try:
            found = self.broker.get_order_by_client_id(request.client_order_id)
        except TemporaryBrokerError:
            return None  # cannot tell: leave the intent for the next run's reconcile
        if found is not None:
            return found
        try:
            return self.broker.submit_order(request)
        except DuplicateClientOrderIdError:
            return self.broker.get_order_by_client_id(request.client_order_id)
        except TemporaryBrokerError:
            try:
                return self.broker.get_order_by_client_id(request.client_order_id)
            except TemporaryBrokerError:
                return None

    def poll(self, order_ids: list[int], options: RebalanceOptions, report: RunReport) -> None:
        deadline = time.monotonic() + options.poll_timeout_s
        pending = list(order_ids)
        while pending:
            still = []
            for order_id in pending:
                with self.factory() as session:
                    cid = session.get_one(Order, order_id).client_order_id
                try:
                    found = self.broker.get_order_by_client_id(cid)
                except TemporaryBrokerError:
                    still.append(order_id)
                    continue
                if found is None:
                    continue
                with session_scope(self.factory) as session:
                    self._apply(session, session.get_one(Order, order_id), found)
                if found.status.is_final:
                    report.final[cid] = found.status.value
                else:
                    still.append(order_id)
            pending = still
            if not pending or time.monotonic() > deadline or self.killed():
                break
            self._sleep(options.poll_interval_s)
        for order_id in pending:
            with self.factory() as session:
                row = session.get_one(Order, order_id)
                report.final[row.client_order_id] = f"{row.status} (still open; the next run reconciles it)"

    def mirror_positions(self) -> None:
        positions = {p.ticker: p for p in self.broker.get_positions()}
        with session_scope(self.factory) as session:
            rows = {r.ticker: r for r in session.scalars(select(Position).where(Position.user_id == self.user_id, Position.broker == self.broker.name))}
            for ticker, position in positions.items():
                row = rows.get(ticker) or Position(user_id=self.user_id, broker=self.broker.name, ticker=ticker, qty=0.0, avg_entry_price=0.0)
                row.qty, row.avg_entry_price = position.qty, position.avg_entry_price
                session.add(row)
            for ticker, row in rows.items():
                if ticker not in positions:
                    row.qty = 0.0

    # ------------------------------------------------------------------ the run

    def run_once(self, options: RebalanceOptions = RebalanceOptions()) -> RunReport:
        """One rebalance; a second run for the same user and broker at the same time waits for the first
        (then finds the week sent and sends nothing). A dry run writes nothing and needs no lock."""
        if options.dry_run:
            return self._run_once(options)
        with exclusive(self.factory.kw["bind"], f"trade run for user {self.user_id} on {self.broker.name}"):
            return self._run_once(options)

    def _run_once(self, options: RebalanceOptions) -> RunReport:
        self.ensure_alive()
        now = self.clock()
        week = self.decision_week(now)
        report = RunReport(self.user_id, self.broker.name, week, dry_run=options.dry_run)
        clock = self.broker.get_clock()
        calendar_open = market_calendar.is_market_open(now)
        if clock.is_open != calendar_open:
            report.messages.append(f"the broker says the market is {'open' if clock.is_open else 'closed'}, the exchange calendar disagrees")
        if not calendar_open:
            report.messages.append(f"market closed at {now:%Y-%m-%d %H:%M} UTC: day orders queue for the next open ({clock.next_open:%Y-%m-%d %H:%M} UTC)" if clock.next_open else "market closed")
        if week is None:
            report.messages.append("no weekly decision session has closed yet")
            return report
        self.check_not_backwards(week)
        if options.dry_run:
            report.planned = [] if self.week_already_sent(week) else self.plan(week, options, report)
            if self.week_already_sent(week):
                report.messages.append(f"week {week} was already rebalanced: nothing new would be sent")
            return report
        to_send = self.reconcile(report, week)
        with session_scope(self.factory) as session:
            state = self.state(session)
            state.last_run_at, state.message = utcnow(), None
        if self.week_already_sent(week):
            report.messages.append(f"week {week} was already rebalanced: nothing new sent")
        else:
            report.planned = self.plan(week, options, report)
            to_send += self.write_intents(week, report.planned)
            self.log(f"decision week {week}: {len(report.planned)} orders planned", equity=report.equity,
                     orders=[f"{t.side.value} {t.qty:g} {t.ticker}" for t in report.planned])
        try:
            for order_id in to_send:
                self.send(order_id, report)
        except OperationalBrokerError as exc:
            with session_scope(self.factory) as session:
                state = self.state(session)
                state.status, state.message = "stopped", f"stopped: {exc}"
            self.log(f"stopped: {exc}", "error")
            raise
        with self.factory() as session:
            open_ids = list(session.scalars(select(Order.id).where(Order.user_id == self.user_id, Order.broker == self.broker.name,
                                                                      Order.status.in_(OPEN_STATUSES[1:]))))
        self.poll(open_ids, options, report)
        self.mirror_positions()
        with session_scope(self.factory) as session:
            state = self.state(session)
            state.last_decision_week, state.last_run_at = week, utcnow()
        return report


def kill(factory: sessionmaker[Session], broker: Broker, user_id: int) -> list[str]:
    """Kill switch: stop the loop and cancel every open order of this user at the broker."""
    bot = RebalanceBot(factory, broker, user_id, RiskParams(risk_aversion=1, max_weight=0, max_gross=0))
    with session_scope(factory) as session:
        state = bot.state(session)
        state.kill_requested, state.status, state.message = True, "killed", "kill switch"
    canceled = []
    for order in broker.list_open_orders():
        if order.client_order_id.startswith(user_prefix(user_id)) or order.client_order_id in _known_ids(factory, user_id, broker.name):
            broker.cancel_order(order.broker_order_id)
            canceled.append(order.client_order_id)
    with session_scope(factory) as session:
        for row in session.scalars(select(Order).where(Order.user_id == user_id, Order.broker == broker.name, Order.status.in_(OPEN_STATUSES))):
            if row.status == "intent":
                row.status, row.error = OrderStatus.CANCELED.value, "kill switch before sending"
            elif row.client_order_id in canceled:
                row.status = OrderStatus.CANCELED.value
        session.add(BotEvent(user_id=user_id, broker=broker.name, level="warning", message=f"kill switch: {len(canceled)} open orders canceled", data={"canceled": canceled}))
    return canceled


def resume(factory: sessionmaker[Session], broker_name: str, user_id: int) -> None:
    with session_scope(factory) as session:
        state = session.scalar(select(BotState).where(BotState.user_id == user_id, BotState.broker == broker_name))
        if state is not None:
            state.kill_requested, state.status, state.message = False, "stopped", "resumed"


def _known_ids(factory: sessionmaker[Session], user_id: int, broker_name: str) -> set[str]:
    with factory() as session:
        return set(session.scalars(select(Order.client_order_id).where(Order.user_id == user_id, Order.broker == broker_name)))


def run_loop(bot: RebalanceBot, options: RebalanceOptions, interval_s: float, *, max_iterations: int | None = None,
             on_report: Callable[[RunReport], None] | None = None) -> int:
    """Rebalance each new decision week until killed. State is in the database, so a restart picks up
    where it stopped (the next run reconciles first). Returns the number of iterations."""
    iterations = 0
    with session_scope(bot.factory) as session:
        bot.state(session).status = "running"
    while max_iterations is None or iterations < max_iterations:
        if bot.killed():
            break
        report = bot.run_once(options)
        if on_report:
            on_report(report)
        iterations += 1
        if max_iterations is not None and iterations >= max_iterations:
            break
        bot._sleep(interval_s)
    with session_scope(bot.factory) as session:
        state = bot.state(session)
        if not state.kill_requested:
            state.status = "stopped"
    return iterations

"""The rebalance bot: follow a user's active views on a paper account, never losing or doubling an order.

One run (``run_once``):
  1. **Kill switch** checked first (and before every send and every poll).
  2. **Reconcile.** Every order of this user and broker that is not final is looked up at the broker
     by its client order id and updated; an intent the broker never saw is sent later in this run if
     it belongs to the current decision week, and expired otherwise; open orders at the broker that
     the database does not know are adopted (recorded with ``adopted``) and reported.
  3. **Plan** — unless this decision week was already sent: the user's views for the week (their
     active model version) -> target weights with the same portfolio function as the backtest ->
     difference with the broker's positions -> orders by the one planner of :mod:`advisor.execution`
     (closes and reductions, then new shorts, then new longs; whole shares where the broker has no
     fractional trading; below the minimum notional skipped). A sign flip is a close then an open.
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

The steps live in their own modules: :mod:`advisor.trading.planner` (3),
:mod:`advisor.trading.executor` (4-6) and :mod:`advisor.trading.reconciler` (2, and the positions of 6);
:mod:`advisor.trading.botcore` holds what they share.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from advisor import market_calendar
from advisor.data.windows import weekly_decision_dates
from advisor.portfolio import RiskParams
from advisor.trading.botcore import (
    OPEN_STATUSES,
    BotKilledError,
    PlannedTrade,
    RebalanceOptions,
    RunReport,
    client_order_id,
    user_prefix,
)
from advisor.trading.broker import Broker, OrderStatus
from advisor.trading.errors import (
    OperationalBrokerError,
)
from advisor.trading.executor import Executor
from advisor.trading.planner import Planner
from db.engine import session_scope
from db.locks import exclusive
from db.models import BotEvent, BotState, Order
from db.types import utcnow

__all__ = ["BotKilledError", "PlannedTrade", "RebalanceBot", "RebalanceOptions", "RunReport", "client_order_id", "kill", "resume", "run_loop"]


class RebalanceBot(Planner, Executor):
    """One user's bot on one broker (see the module docstring for a run's steps)."""

    def decision_week(self, now: datetime) -> date | None:
        """The newest weekly decision session whose close has passed."""
        today = market_calendar.exchange_today(now)
        closed = [d for d in weekly_decision_dates(today - timedelta(days=14), today) if market_calendar.session_close(d) <= now]
        return closed[-1] if closed else None

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

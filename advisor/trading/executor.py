"""Sending orders safely: intents written before anything is sent, one send per intent (a temporary failure
is resolved by looking the client order id up, never by resending blindly), then polling to a final state."""

from __future__ import annotations

import time
from datetime import date

from sqlalchemy import select

from advisor.trading.botcore import (
    PlannedTrade,
    RebalanceOptions,
    RunReport,
    client_order_id,
)
from advisor.trading.broker import BrokerOrder, OrderRequest, OrderStatus, Side
from advisor.trading.errors import (
    DuplicateClientOrderIdError,
    OrderRejectedError,
    TemporaryBrokerError,
)
from advisor.trading.intent import OrderIntent
from advisor.trading.reconciler import Reconciler
from db.engine import session_scope
from db.models import Order


class Executor(Reconciler):
    def week_already_sent(self, week: date) -> bool:
        with self.factory() as session:
            return session.scalar(
                select(Order.id).where(Order.user_id == self.user_id, Order.broker == self.broker.name, Order.decision_week == week,
                                       Order.adopted.is_(False)).limit(1)
            ) is not None

    def write_intents(self, week: date, trades: list[PlannedTrade]) -> list[int]:
        """Record the plan as intents; returns the ids to send (an order the broker already has is not among them)."""
        ids = []
        claimed = []
        with session_scope(self.factory) as session:
            for trade in trades:
                cid = client_order_id(self.user_id, week, trade.ticker, trade.side, trade.sequence)
                intent = OrderIntent(target_weight=trade.target_weight, price_ref=trade.price, current_qty=trade.current_qty,
                                     notional_estimate=trade.notional)
                existing = session.scalar(select(Order).where(Order.client_order_id == cid, Order.broker == self.broker.name))
                if existing is not None and existing.adopted and existing.user_id == self.user_id:
                    # The broker already holds an order with this trade's deterministic id (reconcile adopted it:
                    # a process placed it, then crashed before its intent was recorded). It *is* this trade:
                    # claim it for the week, keep the broker's quantity, and never send it a second time.
                    existing.decision_week, existing.sequence, existing.adopted = week, trade.sequence, False
                    existing.intent = intent.model_copy(update={"adopted": True}).dump()
                    claimed.append(cid)
                    continue
                row = Order(
                    client_order_id=cid, user_id=self.user_id, broker=self.broker.name, decision_week=week, ticker=trade.ticker,
                    side=trade.side.value, sequence=trade.sequence, qty=trade.qty, status="intent", intent=intent.dump(),
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

"""Reconciling the database with the broker: every open order looked up by its client order id and
updated (fills recorded once), stale intents expired, unknown open orders adopted, positions mirrored."""

from __future__ import annotations

from datetime import date

from sqlalchemy import select
from sqlalchemy.orm import Session

from advisor.trading.botcore import (
    OPEN_STATUSES,
    BotContext,
    RunReport,
)
from advisor.trading.broker import BrokerOrder, OrderStatus
from advisor.trading.intent import OrderIntent
from db.engine import session_scope
from db.models import Fill, Order, Position


class Reconciler(BotContext):
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
                    intent=OrderIntent(adopted=True).dump(),
                )
                session.add(row)
                session.flush()
                self._apply(session, row, found)
            report.adopted.append(found.client_order_id)
            self.log(f"adopted an order the bot did not place: {found.client_order_id}", "warning", ticker=found.ticker)
        return to_send

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

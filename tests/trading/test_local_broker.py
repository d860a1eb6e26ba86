"""The local paper broker: next-open fills with costs, persistence, duplicates, rejections."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from sqlalchemy import select

from advisor import market_calendar
from advisor.execution import CostModel
from advisor.trading.broker import OrderRequest, OrderStatus, Side
from advisor.trading.errors import DuplicateClientOrderIdError, OrderRejectedError
from advisor.trading.local_broker import LocalPaperBroker, SimulatedClock
from db.models import DailyBar, PaperAccount
from tests.trading.conftest import sim_clock


def test_market_order_fills_at_the_next_open_with_costs(trading_db) -> None:
    clock = sim_clock(date(2014, 5, 9))  # Friday after the close
    broker = LocalPaperBroker(trading_db, 1, costs=CostModel(commission_bps=2, slippage_bps=10), clock=clock)
    order = broker.submit_order(OrderRequest("c-1", "AAA", Side.BUY, qty=10))
    assert order.status is OrderStatus.ACCEPTED and order.filled_qty == 0
    broker.wait(1)  # simulated: jump to Monday's open
    filled = broker.get_order_by_client_id("c-1")
    with trading_db() as session:
        bar = session.get(DailyBar, ("AAA", date(2014, 5, 12)))
    price = min(bar.open * 1.001, bar.high)
    assert filled.status is OrderStatus.FILLED and filled.filled_avg_price == pytest.approx(price)
    assert filled.fills[0].commission == pytest.approx(10 * price * 0.0002)
    assert filled.fills[0].filled_at == market_calendar.session_open(date(2014, 5, 12))
    account = broker.get_account()
    assert account.cash == pytest.approx(100_000 - 10 * price * 1.0002)
    assert [(p.ticker, p.qty) for p in broker.get_positions()] == [("AAA", 10)]


def test_state_persists_across_broker_instances(trading_db) -> None:
    clock = sim_clock()
    LocalPaperBroker(trading_db, 1, clock=clock).submit_order(OrderRequest("c-1", "BBB", Side.BUY, notional=5_000))
    again = LocalPaperBroker(trading_db, 1, clock=clock)
    assert again.get_order_by_client_id("c-1").status is OrderStatus.ACCEPTED
    assert [o.client_order_id for o in again.list_open_orders()] == ["c-1"]
    with pytest.raises(DuplicateClientOrderIdError):
        again.submit_order(OrderRequest("c-1", "BBB", Side.BUY, qty=1))
    with trading_db() as session:
        assert len(session.scalars(select(PaperAccount)).all()) == 1


def test_rejections_and_cancel(trading_db) -> None:
    clock = sim_clock()
    broker = LocalPaperBroker(trading_db, 1, initial_cash=1_000, clock=clock)
    with pytest.raises(OrderRejectedError, match="not a known ticker"):
        broker.submit_order(OrderRequest("c-x", "ZZZZ", Side.BUY, qty=1))
    broker.submit_order(OrderRequest("c-big", "AAA", Side.BUY, qty=1_000))
    broker.submit_order(OrderRequest("c-cancel", "BBB", Side.BUY, qty=1))
    broker.cancel_order(broker.get_order_by_client_id("c-cancel").broker_order_id)
    broker.wait(1)
    big = broker.get_order_by_client_id("c-big")
    assert big.status is OrderStatus.REJECTED and "insufficient buying power" in big.reject_reason
    assert broker.get_order_by_client_id("c-cancel").status is OrderStatus.CANCELED
    assert broker.get_positions() == []


def test_an_order_waits_when_the_next_bar_is_not_in_the_store(trading_db) -> None:
    clock = SimulatedClock(market_calendar.session_close(date(2014, 9, 30)) + timedelta(minutes=1))
    broker = LocalPaperBroker(trading_db, 1, clock=clock)
    broker.submit_order(OrderRequest("c-late", "AAA", Side.BUY, qty=1))
    broker.wait(1)
    assert broker.get_order_by_client_id("c-late").status is OrderStatus.ACCEPTED

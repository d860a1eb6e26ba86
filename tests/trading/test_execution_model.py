"""One execution model: the paper bot plans with the backtest's planner, and the local paper broker
fills with the backtest's cost model."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from advisor import market_calendar
from advisor.execution import CostModel, plan_orders
from advisor.trading.bot import RebalanceOptions
from advisor.trading.broker import Side
from db.models import DailyBar, Fill, Order
from tests.trading.conftest import WEEK, local_bot


def test_the_bot_plans_what_the_backtest_planner_plans(trading_db) -> None:
    bot, _ = local_bot(trading_db)
    report = bot.run_once(RebalanceOptions(dry_run=True))
    assert report.planned
    weights = {t.ticker: t.target_weight for t in report.planned}
    prices = {t.ticker: t.price for t in report.planned}
    expected = plan_orders(weights, report.equity, prices, {}, RebalanceOptions().min_notional, lambda q: round(q, 6))
    planned: dict[str, float] = {}
    for trade in report.planned:  # slices of one order add up to it
        planned[trade.ticker] = planned.get(trade.ticker, 0.0) + (trade.qty if trade.side is Side.BUY else -trade.qty)
    assert [(o.ticker, round(o.qty, 6)) for o in expected] == [(t, round(q, 6)) for t, q in planned.items()]


def test_the_local_broker_fills_at_the_cost_models_price(trading_db) -> None:
    costs = CostModel()
    bot, clock = local_bot(trading_db)
    report = bot.run_once(RebalanceOptions(poll_timeout_s=5, poll_interval_s=0))
    assert set(report.final.values()) == {"filled"}
    fill_day = market_calendar.next_session_after(WEEK)
    with trading_db() as session:
        rows = session.execute(select(Order.ticker, Order.side, Fill.qty, Fill.price, Fill.commission).join(Fill, Fill.order_id == Order.id)).all()
        assert rows
        for ticker, side, qty, price, commission in rows:
            bar = session.scalar(select(DailyBar).where(DailyBar.ticker == ticker, DailyBar.date == fill_day))
            assert price == pytest.approx(costs.fill_price(bar.open, bar.high, bar.low, buy=side == Side.BUY.value))
            assert commission == pytest.approx(costs.commission_for(qty, price))


def test_cost_model_keeps_slipped_prices_within_the_bar() -> None:
    costs = CostModel(slippage_bps=100)
    assert costs.fill_price(10.0, 10.05, 9.0, buy=True) == 10.05
    assert costs.fill_price(10.0, 11.0, 9.95, buy=False) == 9.95
    assert costs.fill_price(10.0, 11.0, 9.0, buy=True) == pytest.approx(10.1)
    assert costs.commission_for(-10, 10.0) == pytest.approx(0.01)


def test_whole_share_rounding_and_the_phase_order() -> None:
    plan = plan_orders({"A": 0.5, "B": -0.25}, 1000.0, {"A": 30.0, "B": 7.0}, {"B": 10.0}, 1.0, lambda q: float(int(q)))
    assert [(o.ticker, o.qty, o.opening) for o in plan] == [("B", -10.0, False), ("B", -35.0, True), ("A", 16.0, True)]
    assert plan_orders({"A": 0.01}, 1000.0, {"A": 30.0}, {}, 1.0, lambda q: float(int(q))) == [], "rounds to zero shares: nothing to send"

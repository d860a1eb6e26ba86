"""Backtrader vs an independent pandas replay: same daily equity; fills at the next bar's open."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from advisor import market_calendar
from backtest.engine import CostModel, plan_orders, run_backtrader
from backtest.vectorized import run_vectorized

#: Stated tolerance of the cross-check: relative difference of daily equity.
TOLERANCE = 1e-9


def synthetic_prices(seed: int, gaps: bool = True) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    sessions = market_calendar.sessions_between(date(2014, 1, 2), date(2014, 8, 29))
    prices = {}
    for k, ticker in enumerate(["AAA", "BBB", "CCC", "DDD", "EEE"]):
        days = list(sessions)
        if ticker == "CCC":
            days = days[25:]  # starts trading inside the period
        if gaps and ticker == "DDD":
            days = [d for i, d in enumerate(days) if i % 13 != 4]  # halts / missing days
        close = (20 + 15 * k) * np.exp(np.cumsum(rng.normal(0, 0.02, len(days))))
        open_ = close * np.exp(rng.normal(0, 0.012, len(days)))
        prices[ticker] = pd.DataFrame(
            {"open": open_, "high": np.maximum(open_, close) * 1.004, "low": np.minimum(open_, close) * 0.996, "close": close, "volume": 1e6},
            index=pd.to_datetime(days),
        )
    return prices


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("shorts", [False, True])
def test_backtrader_matches_the_vectorised_replay(seed: int, shorts: bool) -> None:
    prices = synthetic_prices(seed)
    fridays = [d for d in market_calendar.sessions_between(date(2014, 1, 2), date(2014, 8, 29)) if d.weekday() == 4]

    def decide(day: date) -> dict[str, float]:
        rng = np.random.default_rng(day.toordinal() + seed)
        return {t: float(rng.uniform(-0.3 if shorts else 0.0, 0.45)) for t in prices}

    costs = CostModel(commission_bps=2, slippage_bps=10)
    bt_result = run_backtrader(prices, decide, fridays, 250_000, costs)
    vec = run_vectorized(prices, decide, fridays, 250_000, costs)
    assert list(bt_result.daily.index) == list(vec.daily.index)
    relative = ((bt_result.daily["equity"] - vec.daily["equity"]).abs() / vec.daily["equity"]).max()
    assert relative < TOLERANCE
    assert np.allclose(bt_result.daily["cash"], vec.daily["cash"], rtol=TOLERANCE, atol=1e-6)
    assert len(bt_result.fills) == len(vec.fills) and bt_result.rejected == vec.rejected
    assert np.allclose(bt_result.fills["price"].to_numpy(), vec.fills["price"].to_numpy(), rtol=1e-12)


def test_orders_fill_at_the_next_bar_open_with_slippage() -> None:
    prices = synthetic_prices(3, gaps=False)
    friday = date(2014, 3, 7)
    result = run_backtrader(prices, lambda d: {"AAA": 0.5}, [friday], 100_000, CostModel(commission_bps=0, slippage_bps=10))
    fill = result.fills.iloc[0]
    monday = pd.Timestamp(2014, 3, 10)
    bar = prices["AAA"].loc[monday]
    assert fill["date"] == date(2014, 3, 10)
    assert fill["price"] == pytest.approx(min(bar["open"] * 1.001, bar["high"]))
    friday_close = prices["AAA"].loc[pd.Timestamp(friday), "close"]
    assert fill["qty"] == pytest.approx(0.5 * 100_000 / friday_close), "sized from the decision's close"


def test_halted_name_fills_at_its_next_bar() -> None:
    prices = synthetic_prices(4, gaps=False)
    frame = prices["BBB"]
    prices["BBB"] = frame.drop(index=[pd.Timestamp(2014, 3, 10), pd.Timestamp(2014, 3, 11)])
    result = run_backtrader(prices, lambda d: {"BBB": 0.3}, [date(2014, 3, 7)], 100_000, CostModel())
    assert result.fills.iloc[0]["date"] == date(2014, 3, 12)
    vec = run_vectorized(prices, lambda d: {"BBB": 0.3}, [date(2014, 3, 7)], 100_000, CostModel())
    assert vec.fills.iloc[0]["date"] == date(2014, 3, 12)


def test_order_plan_closes_before_opening_and_splits_flips() -> None:
    plan = plan_orders({"A": -0.2, "B": 0.3, "C": 0.0, "D": 0.05}, 1000.0, {"A": 10, "B": 10, "C": 10, "D": 10}, {"A": 5, "B": 0, "C": 3, "D": 10}, 1.0)
    kinds = [(o.ticker, round(o.qty, 6), o.opening) for o in plan]
    assert kinds == [("A", -5, False), ("C", -3, False), ("D", -5, False), ("A", -20, True), ("B", 30, True)]

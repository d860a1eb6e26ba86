"""Backtest metrics checked by value on a small series, against the textbook formulas that empyrical
implements (empyrical-reloaded and quantstats are not installable offline here, so their formulas are
restated: sharpe = mean/std(ddof=1)·√252, sortino = mean·252 / (√mean(min(r,0)²)·√252),
cagr = (1+total)^(252/days) − 1, max drawdown = min(wealth / running peak − 1))."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from backtest.metrics import hit_rate, performance

RETURNS = [0.01, -0.02, 0.03, -0.01, 0.0, 0.015, -0.005]
INITIAL = 1000.0


def daily_frame() -> tuple[pd.DataFrame, list[float]]:
    equity, value = [], INITIAL
    for r in RETURNS:
        value *= 1 + r
        equity.append(value)
    frame = pd.DataFrame({"equity": equity, "gross_exposure": [1.0, 0.5] * 3 + [1.0], "net_exposure": [0.5] * 7})
    return frame, equity


def test_metric_values_match_the_reference_formulas() -> None:
    daily, equity = daily_frame()
    fills = pd.DataFrame({"notional": [500.0, 250.0], "commission": [0.05, 0.025]})
    got = performance(daily, fills, INITIAL)
    n = len(RETURNS)
    mean = sum(RETURNS) / n
    std = math.sqrt(sum((r - mean) ** 2 for r in RETURNS) / (n - 1))
    downside = math.sqrt(sum(min(r, 0.0) ** 2 for r in RETURNS) / n)
    total = equity[-1] / INITIAL - 1
    wealth = [INITIAL, *equity]
    peaks = [max(wealth[: i + 1]) for i in range(len(wealth))]
    assert got["days"] == n
    assert got["total_return"] == pytest.approx(total, rel=1e-12)
    assert got["sharpe"] == pytest.approx(mean / std * math.sqrt(252), rel=1e-12)
    assert got["sortino"] == pytest.approx(mean * 252 / (downside * math.sqrt(252)), rel=1e-12)
    assert got["annualized_return"] == pytest.approx((1 + total) ** (252 / n) - 1, rel=1e-12)
    assert got["annualized_volatility"] == pytest.approx(std * math.sqrt(252), rel=1e-12)
    assert got["max_drawdown"] == pytest.approx(min(w / p - 1 for w, p in zip(wealth, peaks, strict=True)), rel=1e-12)
    assert got["max_drawdown"] == pytest.approx(-0.02, rel=1e-9)  # the -2% day right after a peak
    assert got["max_drawdown_days"] == 2  # -1% then a flat day stay under the peak of day 3; day 6 sets a new one
    assert got["turnover_per_year"] == pytest.approx(750.0 / (sum(equity) / n) / (n / 252), rel=1e-12)
    assert got["avg_gross_exposure"] == pytest.approx(sum(daily["gross_exposure"]) / n)
    assert got["commissions"] == pytest.approx(0.075) and got["trades"] == 2


def test_hit_rate_counts_only_traded_views() -> None:
    from datetime import date

    day = date(2015, 6, 5)
    result = hit_rate({day: {"A": 0.2, "B": -0.1, "C": 0.0}}, {(day, "A"): 1.0, (day, "B"): 0.5, (day, "C"): -3.0})
    assert result == {"hit_rate": 0.5, "traded_views": 2}

"""Backtest runs: stored results and charts, the benchmark and references, bad input, look-ahead."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from advisor.portfolio import RiskParams, preset
from backtest.runner import BENCHMARK, BacktestInputError, BacktestRequest, run_backtest
from db.models import BacktestEquity, BacktestPosition, BacktestRun, DailyBar, Forecast


def request_for(version: int | None, **kwargs) -> BacktestRequest:
    base = dict(start=date(2014, 3, 3), end=date(2014, 8, 29), params=preset("moderate"), profile_label="moderate", model_version_id=version)
    return BacktestRequest(**{**base, **kwargs})


def test_a_run_is_stored_with_benchmark_references_metrics_and_chart(market, views, tmp_path: Path) -> None:
    outcome = run_backtest(market, request_for(views), tmp_path / "charts")
    runs = outcome.by_strategy()
    assert set(runs) == {"views", BENCHMARK, "always_long", "momentum", "oracle (ceiling: uses future data)"}
    assert outcome.chart_path.is_file() and outcome.chart_path.stat().st_size > 10_000
    m = runs["views"].metrics
    for key in ("total_return", "annualized_return", "annualized_volatility", "sharpe", "sortino", "max_drawdown",
                "max_drawdown_days", "turnover_per_year", "avg_gross_exposure", "hit_rate", "traded_views"):
        assert key in m
    assert 0 <= m["hit_rate"] <= 1 and m["traded_views"] > 0
    assert m["avg_gross_exposure"] <= preset("moderate").max_gross + 1e-9
    assert runs["oracle (ceiling: uses future data)"].metrics["hit_rate"] > 0.9
    assert any("unparsed" in note for note in outcome.notes)
    with market() as session:
        stored = session.get(BacktestRun, runs["views"].run_id)
        assert stored.model_version_id == views and stored.chart_path == str(outcome.chart_path)
        equity = session.scalars(select(BacktestEquity).where(BacktestEquity.run_id == stored.id).order_by(BacktestEquity.date)).all()
        assert equity[0].date == date(2014, 3, 3) and equity[-1].date == date(2014, 8, 29)
        assert equity[-1].equity == pytest.approx(m["end_equity"])
        positions = session.scalars(select(BacktestPosition).where(BacktestPosition.run_id == stored.id)).all()
        assert positions and all(abs(p.weight) <= 0.2 + 0.05 for p in positions)


def test_benchmark_buys_once_and_holds(market, views, tmp_path: Path) -> None:
    outcome = run_backtest(market, request_for(views, references=False), tmp_path)
    bench = outcome.by_strategy()[BENCHMARK].metrics
    assert bench["trades"] == 4 and bench["hit_rate"] is None


def test_bad_input(market, views, tmp_path: Path) -> None:
    with pytest.raises(BacktestInputError, match="initial cash must be positive"):
        run_backtest(market, request_for(views, initial_cash=0), tmp_path)
    with pytest.raises(BacktestInputError, match="initial cash must be positive"):
        run_backtest(market, request_for(views, initial_cash=-5), tmp_path)
    nothing = RiskParams(risk_aversion=1, max_weight=0.1, max_gross=0)
    with pytest.raises(BacktestInputError, match="allows no exposure"):
        run_backtest(market, request_for(views, params=nothing), tmp_path)
    with pytest.raises(BacktestInputError, match="outside the stored prices"):
        run_backtest(market, request_for(views, end=date(2015, 6, 1)), tmp_path)
    with pytest.raises(BacktestInputError, match="no stored views"):
        run_backtest(market, request_for(views, start=date(2013, 11, 1), end=date(2014, 1, 31)), tmp_path)
    with pytest.raises(BacktestInputError, match="none of ZZZ"):
        run_backtest(market, request_for(views, tickers=("ZZZ",)), tmp_path)
    with market() as session:
        assert session.scalars(select(BacktestRun)).all() == []


def test_names_without_prices_are_left_out_and_reported(market, views, tmp_path: Path) -> None:
    outcome = run_backtest(market, request_for(views, tickers=("AAA", "ZZZ"), references=False), tmp_path)
    assert any("ZZZ" in note for note in outcome.notes)
    with market() as session:
        run = session.get(BacktestRun, outcome.by_strategy()["views"].run_id)
        assert run.tickers == ["AAA"]


def test_changing_data_after_a_decision_changes_nothing_before_it(market, views, tmp_path: Path) -> None:
    """Look-ahead: rewrite every price and view after a cut-off; equity up to the cut-off is identical."""
    cutoff = date(2014, 6, 6)
    first = run_backtest(market, request_for(views, references=False), tmp_path)
    with market() as session:
        session.execute(update(DailyBar).where(DailyBar.date > cutoff).values(open=DailyBar.open * 1.7, high=DailyBar.high * 1.9, low=DailyBar.low * 1.5, close=DailyBar.close * 1.7, adj_close=DailyBar.adj_close * 1.7))
        session.execute(update(Forecast).where(Forecast.forecast_date > cutoff).values(direction="down", bin_low=5.0, bin_high=None))
        session.commit()
    second = run_backtest(market, request_for(views, references=False), tmp_path)

    def curve(outcome, strategy):
        with market() as session:
            rows = session.execute(select(BacktestEquity.date, BacktestEquity.equity).where(BacktestEquity.run_id == outcome.by_strategy()[strategy].run_id)).all()
        return dict(rows)

    for strategy in ("views", BENCHMARK):
        a, b = curve(first, strategy), curve(second, strategy)
        before = [d for d in a if d <= cutoff]
        assert before and all(a[d] == b[d] for d in before)
        assert any(a[d] != b[d] for d in a if d > cutoff + timedelta(days=7)), "the change is visible later"

"""Stored backtest runs for the dashboard (scoped to a user) and their daily data."""

from __future__ import annotations

import pandas as pd
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from db.models import BacktestEquity, BacktestRun


def user_runs(session: Session, user_id: int, limit: int = 50) -> list[BacktestRun]:
    return list(session.scalars(select(BacktestRun).where(BacktestRun.user_id == user_id).order_by(BacktestRun.id.desc()).limit(limit)))


def group_runs(session: Session, group_key: str, user_id: int) -> list[BacktestRun]:
    """The runs compared together under ``group_key`` that this user may see (their own and user-less ones)."""
    return list(session.scalars(
        select(BacktestRun).where(BacktestRun.group_key == group_key, or_(BacktestRun.user_id == user_id, BacktestRun.user_id.is_(None))).order_by(BacktestRun.id)
    ))


def equity_frame(session: Session, run_ids: dict[str, int]) -> pd.DataFrame:
    """Equity of several runs side by side (columns named by label), normalised to 1 at the start."""
    columns = {}
    for label, run_id in run_ids.items():
        rows = session.execute(select(BacktestEquity.date, BacktestEquity.equity).where(BacktestEquity.run_id == run_id).order_by(BacktestEquity.date)).all()
        if rows:
            series = pd.Series([r[1] for r in rows], index=pd.to_datetime([str(r[0]) for r in rows]))
            columns[label] = series / series.iloc[0]
    return pd.DataFrame(columns)


def drawdown_frame(equity: pd.DataFrame) -> pd.DataFrame:
    return (equity / equity.cummax() - 1.0) * 100


def metrics_table(runs: list[BacktestRun]) -> pd.DataFrame:
    keys = ("total_return", "annualized_return", "annualized_volatility", "sharpe", "sortino", "max_drawdown", "max_drawdown_days",
            "turnover_per_year", "avg_gross_exposure", "hit_rate", "traded_views")
    return pd.DataFrame([{"run": r.id, "strategy": r.strategy, **{k: r.metrics.get(k) for k in keys}} for r in runs]).set_index("run")

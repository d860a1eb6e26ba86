"""What a user's overview page shows, as plain functions: this week's target allocation under their
profile, the paper account's return against an equal-weight buy-and-hold of the same names, the model's
track record from the latest stored evaluation report, and the one thing to do next."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from advisor.forecaster.versions import serving_version
from advisor.portfolio import RiskParams, target_weights
from advisor.trading.planner import week_market_inputs, week_views
from advisor.trading.status import equity_history
from db.models import DailyBar, Fill, Forecast, Order, PaperAccount
from db.queries import forecasts_visible_to, latest_profile


@dataclass(frozen=True)
class Allocation:
    week: date | None
    weights: dict[str, float]  # non-zero target weights; negative = short
    note: str  # why there is none, or what it rests on

    @property
    def cash(self) -> float:
        return 1.0 - sum(abs(w) for w in self.weights.values())


def latest_view_week(session: Session, user_id: int, version_id: int) -> date | None:
    return session.scalar(
        select(func.max(Forecast.forecast_date)).where(Forecast.model_version_id == version_id, forecasts_visible_to(user_id))
    )


def weekly_allocation(session: Session, user_id: int, params: RiskParams, base_fingerprint: str) -> Allocation:
    """Target weights for the newest week the user's serving model has views for (the bot's own inputs)."""
    version = serving_version(session, user_id, base_fingerprint)
    if version is None:
        return Allocation(None, {}, "no model version serves you yet")
    week = latest_view_week(session, user_id, version.id)
    if week is None:
        return Allocation(None, {}, f"no views yet from {version.name}: generate this week's views on the Views page")
    views = week_views(session, user_id, base_fingerprint, week, None)
    usable = {t: v for t, v in views.items() if v is not None}
    if not usable:
        return Allocation(week, {}, f"none of the {len(views)} views of {week} is a usable signal")
    vols, _ = week_market_inputs(session, tuple(views), week)
    weights = {t: w for t, w in target_weights(views, vols, params).items() if abs(w) > 1e-9}
    return Allocation(week, weights, f"{len(usable)} usable views of {week} from {version.name}")


@dataclass(frozen=True)
class AccountReturn:
    start: date
    end: date
    account_pct: float
    benchmark_pct: float | None  # equal-weight buy-and-hold of the names the account traded, same dates
    tickers: tuple[str, ...]


def account_vs_benchmark(session: Session, history: pd.DataFrame, initial_cash: float, tickers: list[str]) -> AccountReturn | None:
    """The paper account's return since its first fill, beside buying and holding its names equally."""
    if history.empty:
        return None
    start, end = history["date"].iloc[0], history["date"].iloc[-1]
    account = float(history["equity"].iloc[-1] / initial_cash - 1.0) * 100
    moves = []
    for ticker in tickers:
        closes = session.execute(
            select(DailyBar.adj_close).where(DailyBar.ticker == ticker, DailyBar.date >= start, DailyBar.date <= end).order_by(DailyBar.date)
        ).scalars().all()
        if len(closes) >= 2 and closes[0]:
            moves.append(closes[-1] / closes[0] - 1.0)
    benchmark = sum(moves) / len(moves) * 100 if moves else None
    return AccountReturn(start, end, account, benchmark, tuple(tickers))


def paper_account_return(session: Session, user_id: int, broker: str = "local") -> AccountReturn | None:
    """The user's paper account on ``broker`` against buying and holding the names it traded (None: no trades)."""
    account = session.scalar(select(PaperAccount).where(PaperAccount.user_id == user_id, PaperAccount.broker == broker))
    if account is None:
        return None
    traded = sorted(set(session.scalars(select(Order.ticker).join(Fill, Fill.order_id == Order.id).where(Order.user_id == user_id, Order.broker == broker))))
    return account_vs_benchmark(session, equity_history(session, user_id, broker), account.initial_cash, traded)


def latest_track_record(reports_dir: Path) -> tuple[str, pd.DataFrame] | None:
    """Direction accuracy (95% interval) of every predictor in the newest weekly evaluation report."""
    candidates = sorted(reports_dir.glob("*eval*.json"), key=lambda p: p.stat().st_mtime, reverse=True) if reports_dir.is_dir() else []
    for path in candidates:
        try:
            report: dict[str, Any] = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        overall = report.get("overall")
        if not isinstance(overall, dict):
            continue
        rows = []
        for name, stats in overall.items():
            accuracy = (stats or {}).get("binary_accuracy") or {}
            n = ((stats or {}).get("n") or {}).get("value")
            rows.append({"predictor": name, "direction right": accuracy.get("value"), "low": accuracy.get("low"),
                         "high": accuracy.get("high"), "windows": n})
        period = report.get("period") or ["?", "?"]
        return f"{report.get('title', path.stem)} ({period[0]} to {period[1]}, {report.get('windows', '?')} windows)", pd.DataFrame(rows)
    return None


def next_action(session: Session, user_id: int, allocation: Allocation, pending_pairs: int) -> tuple[str, str]:
    """(what to do, the page that does it)."""
    if latest_profile(session, user_id) is None:
        return "Answer the risk questionnaire: every position is sized from it.", "Profile"
    if allocation.week is None:
        return "Generate this week's views: the allocation starts from them.", "Views"
    if pending_pairs:
        return f"Say which of two views you prefer ({pending_pairs} waiting): your choices tune your advisor.", "Feedback"
    if session.scalar(select(Order.id).where(Order.user_id == user_id).limit(1)) is None:
        return "Preview a rebalance of your paper account to this allocation.", "Paper trading"
    return "Check how your views would have done: run a backtest.", "Backtest"

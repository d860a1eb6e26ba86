"""Performance metrics from a run's daily equity and fills, annualised explicitly.

Daily simple returns r_t (the first against the initial cash); 252 trading days a year; risk-free
rate 0. Sharpe = mean(r) / std(r) * sqrt(252); Sortino = mean(r) / sqrt(mean(min(r, 0)^2)) * sqrt(252);
annualised return = (1 + total)^(252 / days) - 1; max drawdown = min(equity / running peak - 1), its
duration = the longest stretch of trading days spent below a previous peak; turnover = traded
notional / average equity per year; exposure = average gross and net exposure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import date
from typing import Any

import numpy as np
import pandas as pd

TRADING_DAYS = 252


def drawdown(equity: pd.Series) -> pd.Series:
    return equity / equity.cummax() - 1.0


def max_drawdown_duration(equity: pd.Series) -> int:
    below = (equity < equity.cummax()).to_numpy()
    longest = current = 0
    for flag in below:
        current = current + 1 if flag else 0
        longest = max(longest, current)
    return longest


def performance(daily: pd.DataFrame, fills: pd.DataFrame, initial_cash: float) -> dict[str, Any]:
    equity = daily["equity"].astype(float)
    returns = pd.concat([pd.Series([initial_cash]), equity.reset_index(drop=True)]).pct_change().dropna()
    days = len(returns)
    total = float(equity.iloc[-1] / initial_cash - 1.0)
    std = float(returns.std(ddof=1)) if days > 1 else float("nan")
    downside = math.sqrt(float((np.minimum(returns, 0.0) ** 2).mean())) if days else float("nan")
    mean = float(returns.mean()) if days else float("nan")
    years = days / TRADING_DAYS
    traded = float(fills["notional"].sum()) if not fills.empty else 0.0

    def safe(value: float) -> float | None:
        return None if value is None or not math.isfinite(value) else value

    return {
        "days": days,
        "start_equity": initial_cash,
        "end_equity": float(equity.iloc[-1]),
        "total_return": total,
        "annualized_return": safe((1 + total) ** (1 / years) - 1) if years > 0 and total > -1 else None,
        "annualized_volatility": safe(std * math.sqrt(TRADING_DAYS)),
        "sharpe": safe(mean / std * math.sqrt(TRADING_DAYS)) if std and std > 0 else None,
        "sortino": safe(mean / downside * math.sqrt(TRADING_DAYS)) if downside and downside > 0 else None,
        "max_drawdown": float(drawdown(pd.concat([pd.Series([initial_cash]), equity.reset_index(drop=True)])).min()),
        "max_drawdown_days": max_drawdown_duration(pd.concat([pd.Series([initial_cash]), equity.reset_index(drop=True)])),
        "turnover_per_year": safe(traded / float(equity.mean()) / years) if years > 0 else None,
        "avg_gross_exposure": float(daily["gross_exposure"].mean()),
        "avg_net_exposure": float(daily["net_exposure"].mean()),
        "commissions": float(fills["commission"].sum()) if not fills.empty else 0.0,
        "trades": int(len(fills)),
    }


def hit_rate(decisions: Mapping[date, Mapping[str, float]], realised_pct: Mapping[tuple[date, str], float]) -> dict[str, Any]:
    """Share of traded views (non-zero target weight) whose direction matched the realised week."""
    hits = total = 0
    for day, weights in decisions.items():
        for ticker, weight in weights.items():
            move = realised_pct.get((day, ticker))
            if weight == 0 or move is None:
                continue
            total += 1
            hits += (weight > 0) == (move >= 0)
    return {"hit_rate": hits / total if total else None, "traded_views": total}

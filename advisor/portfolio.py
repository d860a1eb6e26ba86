"""Views + risk profile -> target weights: one pure, deterministic function shared by the backtest and the bot.

The rule, in order:

1. **Expected return.** A parsed view gives the signed midpoint of its bin as next week's expected
   return, e.g. "Up by 1-2%" -> +1.5%, "Down by more than 5%" -> -5.5%. An unparsed or missing view
   gives no position.
2. **Risk.** Each name's weekly variance comes from its trailing daily volatility (point in time:
   only closes known at the decision), sigma_week = sigma_day * sqrt(5). A name without enough
   history, or with a daily volatility below 0.01% (a stale series), gets no position.
3. **Sizing.** Mean-variance with the profile's risk aversion lambda, one name at a time:
   w = mu / (lambda * sigma_week^2). Higher aversion, smaller positions; riskier names, smaller.
4. **Direction.** Negative weights are set to zero unless the profile allows shorts.
5. **Target volatility** (optional). If the portfolio's annualised volatility (diagonal
   approximation, sqrt(sum w^2 sigma_year^2)) exceeds the profile's target, all weights are scaled
   down to meet it (never up).
6. **Hard limits, last, whatever the views say:** |w| <= max weight per name; long exposure <=
   1 - max(cash buffer, 1%) — at least 1% always stays in cash to pay slippage and commission, so a
   fully invested profile's last buy is not refused for cash; gross exposure sum |w| <= max gross. Each is enforced by clipping or by scaling
   all weights down, which never breaks a limit already met.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from advisor.errors import ConfigError

TRADING_DAYS = 252
WEEK_DAYS = 5
VOL_LOOKBACK = 60
VOL_MIN_OBSERVATIONS = 20
EPS = 1e-12
MIN_CASH_RESERVE = 0.01  # always kept in cash for costs (slippage, commission, opening gaps)
MIN_DAILY_VOL = 1e-4  # below 0.01% a day a price series is stale or broken, not a risk estimate


@dataclass(frozen=True)
class RiskParams:
    """The profile fields the portfolio code needs (the questionnaire that fills them lives in rlhf)."""

    risk_aversion: float
    max_weight: float
    max_gross: float
    allow_shorts: bool = False
    target_vol: float | None = None  # annualised, e.g. 0.10
    cash_buffer: float = 0.0

    def __post_init__(self) -> None:
        if not (self.risk_aversion > 0 and math.isfinite(self.risk_aversion)):
            raise ConfigError(f"risk aversion must be a positive number, got {self.risk_aversion}")
        if not 0 <= self.max_weight <= 1:
            raise ConfigError(f"max weight per name must be within [0, 1], got {self.max_weight}")
        if not 0 <= self.max_gross <= 2:
            raise ConfigError(f"max gross exposure must be within [0, 2], got {self.max_gross}")
        if not 0 <= self.cash_buffer < 1:
            raise ConfigError(f"cash buffer must be within [0, 1), got {self.cash_buffer}")
        if self.target_vol is not None and not self.target_vol > 0:
            raise ConfigError(f"target volatility must be positive when given, got {self.target_vol}")

    @property
    def allows_exposure(self) -> bool:
        return self.max_weight > 0 and self.max_gross > 0


PRESETS: dict[str, RiskParams] = {
    "conservative": RiskParams(risk_aversion=40.0, max_weight=0.10, max_gross=0.6, target_vol=0.08, cash_buffer=0.2),
    "moderate": RiskParams(risk_aversion=15.0, max_weight=0.20, max_gross=1.0, target_vol=0.15, cash_buffer=0.05),
    "aggressive": RiskParams(risk_aversion=5.0, max_weight=0.35, max_gross=1.5, allow_shorts=True, target_vol=0.30),
}


def preset(name: str) -> RiskParams:
    try:
        return PRESETS[name]
    except KeyError as exc:
        raise ConfigError(f"unknown profile '{name}' (presets: {', '.join(PRESETS)})") from exc


def trailing_daily_volatility(adj_close: pd.Series, lookback: int = VOL_LOOKBACK) -> float | None:
    """Standard deviation of the last ``lookback`` daily log returns (None with too little history).

    The caller passes only closes known at the decision time (the point-in-time store does that).
    """
    closes = adj_close.dropna()
    returns = np.log(closes).diff().dropna().iloc[-lookback:]
    if len(returns) < VOL_MIN_OBSERVATIONS:
        return None
    value = float(returns.std(ddof=1))
    return value if value > 0 and math.isfinite(value) else None


BAD_YEAR_Z = 1.645  # a 1-in-20 bad year, for normally distributed yearly returns


def in_plain_words(params: RiskParams) -> list[str]:
    """What the profile means for a person's money, in sentences (shown with the profile)."""
    lines = []
    if params.target_vol is not None:
        lines.append(
            f"In a bad year (about 1 in 20) this portfolio could lose about {BAD_YEAR_Z * params.target_vol:.0%} of its value: "
            f"it is sized to swing about {params.target_vol:.0%} a year. That counts the names as moving independently; "
            "stocks often fall together, so a real bad year can be worse."
        )
    else:
        lines.append("No volatility target: only the limits below bound how much the portfolio can swing.")
    lines.append(f"At most {params.max_weight:.0%} of your money goes into any one name, and at most {params.max_gross:.0%} into all of them.")
    if params.max_gross > 1.0:
        lines.append(
            f"That is leverage: positions can add up to {params.max_gross:.0%} of your equity, so a fall in the stocks costs you "
            "more than the same fall in money you hold."
        )
    if params.allow_shorts:
        lines.append("Shorts are allowed: the advisor can bet against a name, and a short's loss has no ceiling.")
    return lines


def target_weights(
    expected_returns_pct: Mapping[str, float | None],
    daily_vols: Mapping[str, float | None],
    params: RiskParams,
) -> dict[str, float]:
    """Target weights (fractions of equity) for every ticker in ``expected_returns_pct``.

    See the module docstring for the rule. Deterministic; no I/O.
    """
    tickers = sorted(expected_returns_pct)
    weights: dict[str, float] = {}
    for ticker in tickers:
        mu_pct = expected_returns_pct[ticker]
        vol = daily_vols.get(ticker)
        if mu_pct is None or vol is None or not math.isfinite(mu_pct) or not (MIN_DAILY_VOL <= vol and math.isfinite(vol)):
            weights[ticker] = 0.0
            continue
        weekly_var = (vol**2) * WEEK_DAYS
        w = (mu_pct / 100.0) / (params.risk_aversion * weekly_var)
        if not params.allow_shorts:
            w = max(w, 0.0)
        weights[ticker] = w
    if params.target_vol is not None:
        annual_var = sum((weights[t] ** 2) * (daily_vols[t] or 0.0) ** 2 * TRADING_DAYS for t in tickers)
        annual_vol = math.sqrt(annual_var)
        if annual_vol > params.target_vol:
            scale = params.target_vol / annual_vol
            weights = {t: w * scale for t, w in weights.items()}
    return apply_limits(weights, params)


def apply_limits(weights: Mapping[str, float], params: RiskParams) -> dict[str, float]:
    """The hard limits of step 6, applied to any weights (the bot applies them again at the broker)."""
    limited = {t: float(np.clip(w, -params.max_weight, params.max_weight)) for t, w in weights.items()}
    if not params.allow_shorts:
        limited = {t: max(w, 0.0) for t, w in limited.items()}
    long_cap = 1.0 - max(params.cash_buffer, MIN_CASH_RESERVE)
    long_exposure = sum(w for w in limited.values() if w > 0)
    if long_exposure > long_cap:
        scale = long_cap / long_exposure
        limited = {t: (w * scale if w > 0 else w) for t, w in limited.items()}
    gross = sum(abs(w) for w in limited.values())
    if gross > params.max_gross:
        scale = params.max_gross / gross if gross > EPS else 0.0
        limited = {t: w * scale for t, w in limited.items()}
    return {t: (0.0 if abs(w) < EPS else w) for t, w in limited.items()}


def exposures(weights: Mapping[str, float]) -> tuple[float, float, float]:
    """(long, short, gross) exposure of a weight vector."""
    long = sum(w for w in weights.values() if w > 0)
    short = -sum(w for w in weights.values() if w < 0)
    return long, short, long + short


def params_from_profile(profile: Any) -> RiskParams:
    """RiskParams from a stored risk profile row (db.models.RiskProfile)."""
    return RiskParams(
        risk_aversion=profile.risk_aversion,
        max_weight=profile.max_weight,
        max_gross=profile.max_gross,
        allow_shorts=profile.allow_shorts,
        target_vol=profile.target_vol,
        cash_buffer=profile.cash_buffer,
    )

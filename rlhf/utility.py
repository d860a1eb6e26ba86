"""The utility a user would have had following one view for its target week: what outcome pairs rank by.

Myopic loss-averse mean-variance utility (Benartzi & Thaler 1995: an investor who watches the account
every day and feels each loss kappa times as much as a gain of the same size)::

    w      = the weight the portfolio code gives the view alone under the user's profile
             (advisor.portfolio.target_weights: mean-variance sizing, shorts, target volatility, caps)
    x_d    = w * (P_d - P_{d-1}) / P_0        the position's P&L on day d of the target week,
                                              as a fraction of equity (sum over d = w * R)
    U      = sum_d [ max(x_d, 0) - kappa * max(-x_d, 0) ]  -  (lambda / 2) * w^2 * sigma_week^2

with lambda the profile's risk aversion, sigma_week^2 = 5 * (trailing daily volatility)^2 (known at the
decision) and kappa the profile's loss aversion (:func:`rlhf.profiles.loss_aversion_for`, 1 to 3).

Why the daily path and kappa: with kappa = 1 the sum is w * R and U is plain mean-variance, and since
w = mu / (lambda sigma^2), U = (mu R - mu^2 / 2) / (lambda sigma^2): the order of two views does not
depend on lambda at all, and the caps make most up views the same position. Conservative and
aggressive users then rank 99.8% of candidate pairs the same way. Loss aversion over the days of the
week is what separates them: a week that ends up 1% after a -3% Tuesday is a gain to a bold investor
and a bad week to a cautious one, who would rather have stayed out. ``disagreement`` measures how often
two users rank a pair of views differently over real weeks (the test asks at least 25% for the
conservative and aggressive archetypes).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from advisor.data.labels import ALL_BINS, Direction, signed_value
from advisor.data.store import MarketStore
from advisor.data.windows import WeeklyLabel, weekly_decision_dates, weekly_label
from advisor.errors import DataUnavailableError
from advisor.market_calendar import session_close
from advisor.portfolio import WEEK_DAYS, RiskParams, target_weights, trailing_daily_volatility

DEFAULT_MARGIN = 1e-4  # one basis point of equity: smaller utility gaps are ties, not preferences
ALL_VIEW_RETURNS: tuple[float, ...] = tuple(signed_value(d, m) for d in Direction for m in ALL_BINS)  # the 12 predictable bins


@dataclass(frozen=True)
class UserUtility:
    """The two things a user's utility needs: the portfolio limits and the loss aversion."""

    params: RiskParams
    loss_aversion: float = 1.0

    def __post_init__(self) -> None:
        if not 1.0 <= self.loss_aversion <= 10.0:
            raise ValueError(f"loss aversion must be within [1, 10], got {self.loss_aversion}")


@dataclass(frozen=True)
class OutcomeWeek:
    """What the utility needs to know about one ticker-week: its path and the risk known at the decision."""

    ticker: str
    decision_date: date
    closes: tuple[float, ...]  # the decision close, then each session's close of the target week
    daily_vol: float | None

    @property
    def realised_pct(self) -> float:
        return (self.closes[-1] / self.closes[0] - 1.0) * 100.0


@dataclass(frozen=True)
class Utility:
    weight: float
    realised_pct: float
    utility: float


def outcome_week(store: MarketStore, ticker: str, decision_date: date, label: WeeklyLabel | None = None) -> OutcomeWeek:
    """The target week after ``decision_date`` (raises DataUnavailableError while it is not over)."""
    label = label or weekly_label(store, ticker, decision_date)
    closes = store.bars(ticker, session_close(decision_date), start=decision_date - timedelta(days=120))["adj_close"]
    vol = trailing_daily_volatility(closes) if len(closes) else None
    return OutcomeWeek(ticker, decision_date, label.closes or (label.start_price, label.end_price), vol)


def view_utility(expected_pct: float | None, week: OutcomeWeek, user: UserUtility) -> Utility:
    """U of following a view whose expected return is ``expected_pct`` (None: no view, no position)."""
    weight = target_weights({"x": expected_pct}, {"x": week.daily_vol}, user.params)["x"]
    p0 = week.closes[0]
    pnl = [weight * (b - a) / p0 for a, b in itertools.pairwise(week.closes)]
    felt = sum(x if x > 0 else user.loss_aversion * x for x in pnl)
    variance = (week.daily_vol or 0.0) ** 2 * WEEK_DAYS
    return Utility(weight, week.realised_pct, felt - 0.5 * user.params.risk_aversion * weight**2 * variance)


def ranking(u_a: float, u_b: float, margin: float = DEFAULT_MARGIN) -> int:
    """+1 if view a is preferred, -1 if b, 0 for a tie (gap within ``margin``)."""
    gap = u_a - u_b
    return 0 if abs(gap) <= margin else (1 if gap > 0 else -1)


@dataclass
class Disagreement:
    """How two users rank every pair of the 12 predicted bins over real weeks."""

    weeks: int = 0
    pairs: int = 0
    labelled_by_both: int = 0
    disagree: int = 0
    tie_for_either: int = 0

    @property
    def share(self) -> float:
        return self.disagree / self.labelled_by_both if self.labelled_by_both else 0.0

    def to_json(self) -> dict[str, Any]:
        return {"weeks": self.weeks, "pairs": self.pairs, "labelled_by_both": self.labelled_by_both,
                "disagree": self.disagree, "tie_for_either": self.tie_for_either, "share": self.share}


def disagreement(
    weeks: Iterable[OutcomeWeek], a: UserUtility, b: UserUtility, *, bins: Sequence[float] = ALL_VIEW_RETURNS,
    margin: float = DEFAULT_MARGIN,
) -> Disagreement:
    """Over every pair of predicted bins in each week: how often do ``a`` and ``b`` prefer different views?"""
    out = Disagreement()
    for week in weeks:
        out.weeks += 1
        ua = [view_utility(m, week, a).utility for m in bins]
        ub = [view_utility(m, week, b).utility for m in bins]
        for i, j in itertools.combinations(range(len(bins)), 2):
            out.pairs += 1
            ra, rb = ranking(ua[i], ua[j], margin), ranking(ub[i], ub[j], margin)
            if ra == 0 or rb == 0:
                out.tie_for_either += 1
            else:
                out.labelled_by_both += 1
                out.disagree += ra != rb
    return out


def bundle_weeks(store: MarketStore, tickers: Sequence[str], start: date, end: date) -> Iterable[OutcomeWeek]:
    """Every ticker-week in [start, end] whose target week is over and whose risk is known."""
    for ticker in tickers:
        for day in weekly_decision_dates(start, end):
            try:
                week = outcome_week(store, ticker, day)
            except DataUnavailableError:
                continue
            if week.daily_vol is not None and len(week.closes) > 1:
                yield week

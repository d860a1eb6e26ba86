"""Weekly decisions: views valid at a decision time -> target weights, through the shared portfolio function.

A :class:`ViewSource` answers "what did each view say at this decision?" using only what was known
then; :class:`Decider` turns those views and point-in-time trailing volatility into weights with
:func:`advisor.portfolio.target_weights`. The Backtrader strategy calls the decider live at each
decision; the vectorised cross-check calls the same decider for the same dates.

Sources: stored forecasts of a model version (the product's views); and reference strategies run
through the same code — always-long ("Up by 0-1%" on every name), last-week momentum, and an
**oracle** that is told next week's realised move (a ceiling that uses future data, never a
strategy). The equal-weight buy-and-hold benchmark does not use views or the profile.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from sqlalchemy.orm import Session

from advisor import market_calendar
from advisor.data.labels import bin_for_return, signed_value
from advisor.data.store import MarketStore
from advisor.data.windows import weekly_label
from advisor.errors import DataUnavailableError
from advisor.forecaster.service import expected_return_pct, load_views
from advisor.portfolio import RiskParams, target_weights, trailing_daily_volatility
from db.models import Forecast

ALWAYS_LONG_PCT = 0.5  # "Up by 0-1%"


class ViewSource(ABC):
    """Expected next-week returns (percent) per ticker at a decision; None = no usable view."""

    name: str
    uses_future_data: bool = False

    @abstractmethod
    def views(self, decision: date, as_of: datetime, tickers: Sequence[str]) -> dict[str, float | None]: ...


@dataclass
class StoredViews(ViewSource):
    """Parsed forecasts of one model version whose decision session is the decision date (a user's own
    views preferred over shared ones)."""

    session: Session
    model_version_id: int
    user_id: int | None = None
    name: str = "views"
    _by_date: dict[date, dict[str, Forecast]] | None = field(default=None, init=False, repr=False)
    coverage: dict[str, int] = field(default_factory=lambda: defaultdict(int), init=False)

    def views(self, decision: date, as_of: datetime, tickers: Sequence[str]) -> dict[str, float | None]:
        if self._by_date is None:
            # A user's own views first; shared (user-less) views of the same model fill the gaps.
            self._by_date = load_views(self.session, self.model_version_id, self.user_id, date.min, date.max, include_shared=True)
        rows = self._by_date.get(decision, {})
        out: dict[str, float | None] = {}
        for ticker in tickers:
            row = rows.get(ticker)
            if row is None or row.as_of > as_of:  # a view made after the decision cannot be used
                self.coverage["missing"] += 1
                out[ticker] = None
                continue
            out[ticker] = expected_return_pct(row)
            self.coverage["used" if out[ticker] is not None else "unparsed"] += 1
        return out


@dataclass
class AlwaysLong(ViewSource):
    name: str = "always_long"

    def views(self, decision: date, as_of: datetime, tickers: Sequence[str]) -> dict[str, float | None]:
        return {t: ALWAYS_LONG_PCT for t in tickers}


@dataclass
class Momentum(ViewSource):
    """Last week's move, in its bin: what a naive trend follower would predict."""

    store: MarketStore
    name: str = "momentum"

    def views(self, decision: date, as_of: datetime, tickers: Sequence[str]) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for ticker in tickers:
            closes = self.store.bars(ticker, as_of, start=decision - timedelta(days=14))["adj_close"] if self.store.date_range(ticker) else None
            week_ago = None if closes is None else closes[closes.index <= decision - timedelta(days=7)]
            if closes is None or closes.empty or week_ago is None or week_ago.empty:
                out[ticker] = None
                continue
            move = (closes.iloc[-1] / week_ago.iloc[-1] - 1) * 100
            out[ticker] = signed_value(*bin_for_return(move))
        return out


@dataclass
class Oracle(ViewSource):
    """Knows next week's realised move. A ceiling for comparison; it uses future data by design."""

    store: MarketStore
    name: str = "oracle (ceiling: uses future data)"
    uses_future_data: bool = True

    def views(self, decision: date, as_of: datetime, tickers: Sequence[str]) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for ticker in tickers:
            try:
                label = weekly_label(self.store, ticker, decision)
                out[ticker] = signed_value(label.direction, label.magnitude)
            except DataUnavailableError:
                out[ticker] = None
        return out


@dataclass
class Decider:
    """Decision date -> target weights, from a view source, point-in-time volatility and the profile."""

    store: MarketStore
    source: ViewSource
    params: RiskParams
    tickers: tuple[str, ...]
    log: dict[date, dict[str, float]] = field(default_factory=dict)
    views_log: dict[date, dict[str, float | None]] = field(default_factory=dict)

    def __call__(self, decision: date) -> dict[str, float]:
        if decision in self.log:
            return self.log[decision]
        as_of = market_calendar.session_close(decision)
        views = self.source.views(decision, as_of, self.tickers)
        vols: dict[str, float | None] = {}
        for ticker in self.tickers:
            if views.get(ticker) is None:
                vols[ticker] = None
                continue
            closes = self.store.bars(ticker, as_of, start=decision - timedelta(days=120))["adj_close"]
            vols[ticker] = trailing_daily_volatility(closes) if len(closes) else None
        weights = target_weights(views, vols, self.params)
        self.log[decision] = weights
        self.views_log[decision] = views
        return weights


BENCHMARK_INVESTED = 0.99  # 1% stays in cash to pay slippage, commission and opening gaps


@dataclass
class BuyAndHold:
    """Equal weights (99% invested) at the first decision, then never trade again (the benchmark)."""

    tickers: tuple[str, ...]
    first_decision: date
    log: dict[date, dict[str, float]] = field(default_factory=dict)

    def __call__(self, decision: date) -> dict[str, float] | None:
        if decision != self.first_decision:
            return None
        weights = {t: BENCHMARK_INVESTED / len(self.tickers) for t in self.tickers}
        self.log[decision] = weights
        return weights

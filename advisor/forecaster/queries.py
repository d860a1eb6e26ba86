"""Read-only queries about stored views, for the dashboard and the CLI (scoped to one user)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import pandas as pd
from scipy.stats import binomtest
from sqlalchemy import select
from sqlalchemy.orm import Session

from advisor.data.store import MarketStore
from advisor.data.windows import daily_label, weekly_label
from advisor.errors import DataUnavailableError
from advisor.forecaster.views import View, parse_view
from db.models import Forecast, ModelVersion, TextItem
from db.queries import forecasts_visible_to


@dataclass(frozen=True)
class ViewCard:
    forecast: Forecast
    view: View
    model_name: str
    model_kind: str
    texts: tuple[TextItem, ...]


def view_weeks(session: Session, user_id: int | None) -> list[date]:
    rows = session.scalars(select(Forecast.forecast_date).where(forecasts_visible_to(user_id)).distinct().order_by(Forecast.forecast_date.desc()))
    return list(rows)


def view_cards(session: Session, user_id: int | None, week: date, tickers: list[str] | None = None, *, greedy_only: bool = True) -> list[ViewCard]:
    query = select(Forecast, ModelVersion).join(ModelVersion, Forecast.model_version_id == ModelVersion.id).where(
        forecasts_visible_to(user_id), Forecast.forecast_date == week
    )
    if tickers:
        query = query.where(Forecast.ticker.in_(tickers))
    cards = []
    for forecast, version in session.execute(query.order_by(Forecast.ticker, Forecast.model_version_id.desc(), Forecast.candidate_index)).all():
        if greedy_only and forecast.decoding.get("mode") != "greedy":
            continue
        cards.append(ViewCard(forecast, parse_view(forecast.raw_text), version.name, version.kind, forecast_texts(session, forecast)))
    return cards


def forecast_texts(session: Session, forecast: Forecast) -> tuple[TextItem, ...]:
    """The posts a view's prompt quoted, oldest first."""
    ids = [int(i) for i in (forecast.text_item_ids or [])]
    return tuple(session.scalars(select(TextItem).where(TextItem.id.in_(ids)).order_by(TextItem.published_at))) if ids else ()


def price_context(store: MarketStore, ticker: str, week: date, weeks_before: int = 8, weeks_after: int = 2) -> pd.DataFrame:
    """Closing prices around a forecast week (the week after the decision is shown as what happened)."""
    bars = store.outcome_bars(ticker, week - timedelta(weeks=weeks_before), week + timedelta(weeks=weeks_after))
    if bars.empty:
        return pd.DataFrame(columns=["date", "close"])
    return pd.DataFrame({"date": pd.to_datetime([str(d) for d in bars.index]), "close": bars["adj_close"].to_numpy()})


@dataclass(frozen=True)
class ViewResult:
    """What happened in a view's target period, beside what the view said."""

    actual_pct: float
    direction_right: bool
    bin_right: bool

    def text(self) -> str:
        verdict = "right direction and size" if self.bin_right else "right direction" if self.direction_right else "wrong direction"
        return f"actual {self.actual_pct:+.1f}%: {verdict}"


@dataclass(frozen=True)
class HitRate:
    """Direction calls that came true, with a 95% Wilson interval (wide on few views: say so)."""

    right: int
    total: int
    low: float
    high: float

    def text(self) -> str:
        if not self.total:
            return "no past views with a known result yet"
        return f"{self.right} of {self.total} past views called the direction right ({self.right / self.total:.0%}; 95% interval {self.low:.0%} to {self.high:.0%})"


def view_result(store: MarketStore, forecast: Forecast, view: View) -> ViewResult | None:
    """The view's result once its target period is in the stored prices; None before that or for an unparsed view.

    It reads prices after the decision by design (it grades the view); the view itself was written without them.
    """
    if not view.is_signal:
        return None
    try:
        label = (daily_label if forecast.horizon_days <= 1 else weekly_label)(store, forecast.ticker, forecast.forecast_date)
    except DataUnavailableError:
        return None
    return ViewResult(label.return_pct, label.direction == view.direction, label.direction == view.direction and label.magnitude == view.magnitude)


def hit_rate(session: Session, store: MarketStore, user_id: int | None, ticker: str, model_version_id: int, before: date) -> HitRate:
    """How often one model's greedy views of ``ticker`` that this user sees, decided before ``before``, got the direction right."""
    forecasts = session.scalars(
        select(Forecast).where(
            forecasts_visible_to(user_id), Forecast.ticker == ticker, Forecast.model_version_id == model_version_id, Forecast.forecast_date < before
        )
    )
    results = [view_result(store, f, parse_view(f.raw_text)) for f in forecasts if f.decoding.get("mode") == "greedy"]
    known = [r for r in results if r is not None]
    right = sum(r.direction_right for r in known)
    if not known:
        return HitRate(0, 0, 0.0, 1.0)
    interval = binomtest(right, len(known)).proportion_ci(confidence_level=0.95, method="wilson")
    return HitRate(right, len(known), float(interval.low), float(interval.high))

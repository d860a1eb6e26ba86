"""Read-only queries about stored views, for the dashboard and the CLI (scoped to one user)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from advisor.data.store import MarketStore
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
        ids = [int(i) for i in (forecast.text_item_ids or [])]
        texts = tuple(session.scalars(select(TextItem).where(TextItem.id.in_(ids)).order_by(TextItem.published_at))) if ids else ()
        cards.append(ViewCard(forecast, parse_view(forecast.raw_text), version.name, version.kind, texts))
    return cards


def price_context(store: MarketStore, ticker: str, week: date, weeks_before: int = 8, weeks_after: int = 2) -> pd.DataFrame:
    """Closing prices around a forecast week (the week after the decision is shown as what happened)."""
    bars = store.outcome_bars(ticker, week - timedelta(weeks=weeks_before), week + timedelta(weeks=weeks_after))
    if bars.empty:
        return pd.DataFrame(columns=["date", "close"])
    return pd.DataFrame({"date": pd.to_datetime([str(d) for d in bars.index]), "close": bars["adj_close"].to_numpy()})

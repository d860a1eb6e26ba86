"""What a view was built from, shown the same way on every page: the price around its week and its posts."""

from __future__ import annotations

from datetime import timedelta

import altair as alt
import pandas as pd
import streamlit as st

from advisor.data.store import MarketStore
from advisor.data.textselect import clean_for_prompt
from advisor.forecaster.queries import price_context
from dashboard.state import md_escape
from db.models import Forecast, TextItem


def show_price_week(store: MarketStore, forecast: Forecast, *, with_outcome: bool = True) -> None:
    """Adjusted closes around the decision, the forecast week shaded; ``with_outcome=False`` stops at the
    decision (what the view was written from, for judging it without hindsight)."""
    prices = price_context(store, forecast.ticker, forecast.forecast_date, weeks_after=2 if with_outcome else 0)
    if not with_outcome:
        prices = prices[prices["date"] <= pd.Timestamp(forecast.forecast_date)]
    if prices.empty:
        st.caption("No stored prices around this week.")
        return
    if not with_outcome:
        st.altair_chart(alt.Chart(prices).mark_line().encode(
            x=alt.X("date:T", title=None), y=alt.Y("close:Q", title="adjusted close ($)", scale=alt.Scale(zero=False), axis=alt.Axis(format="$,.2f"))),
            width="stretch")
        st.caption(f"adjusted close up to the decision on {forecast.forecast_date} (what the views saw; what came next is not shown)")
        return
    band = pd.DataFrame({"start": [pd.Timestamp(forecast.target_start)], "end": [pd.Timestamp(forecast.target_end) + timedelta(hours=20)]})
    chart = alt.Chart(prices).mark_line().encode(
        x=alt.X("date:T", title=None), y=alt.Y("close:Q", title="adjusted close ($)", scale=alt.Scale(zero=False), axis=alt.Axis(format="$,.2f")))
    marked = alt.Chart(band).mark_rect(opacity=0.2, color="orange").encode(x=alt.X("start:T", title=None), x2="end:T")
    st.altair_chart(marked + chart, width="stretch")
    st.caption("adjusted close; the shaded week is the forecast week")


TONE_WORDS = {1: "upbeat", -1: "worried", 0: "neutral"}


def show_posts(texts: tuple[TextItem, ...], tones: dict[str, int] | None = None) -> None:
    """The posts the prompt quoted, as it quoted them (links removed, entities decoded; spam never reaches a
    prompt), escaped: posts are data, never markup. ``tones``: the sentiment classifier's stored readings
    (post text -> -1/0/+1), shown beside each post it has read."""
    st.markdown("**Posts the view was built from**")
    if not texts:
        st.caption("No posts: this view rests on prices alone.")
    for t in texts:
        st.markdown(f"> {md_escape(clean_for_prompt(t.text)[:240])}")
        tone = (tones or {}).get(t.text)
        read = f" · read as {TONE_WORDS[tone]} by the sentiment classifier" if tone is not None else ""
        st.caption(f"{t.published_at:%Y-%m-%d %H:%M} UTC{read}")

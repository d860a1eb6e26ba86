"""Views: this week's views with the posts they were built from and the price around the week."""

from datetime import date, timedelta

import altair as alt
import pandas as pd
import streamlit as st

from advisor.data.store import SqlMarketStore
from advisor.forecaster.checker import ViewCheck
from advisor.forecaster.queries import price_context, view_cards, view_weeks
from advisor.forecaster.service import Personalisation, forecast_tickers
from dashboard.state import md_escape, require_market_data, require_user, setup, show_error, user_model

rt = setup()
require_market_data(rt)
user = require_user(rt)
st.title("Weekly views")

with rt.session() as session:
    weeks = view_weeks(session, user.id)
    all_tickers = SqlMarketStore(session).tickers()

with st.expander("Generate new views", expanded=not weeks):
    tickers = st.multiselect("Tickers", all_tickers, default=all_tickers[:3], key="gen_tickers")
    day = st.date_input("Forecast date (uses what was known at that close)", value=weeks[0] if weeks else date(2015, 6, 5), key="gen_date")
    if st.button("Generate views", key="generate"):
        bar = st.progress(0.0, text="loading the model")
        try:
            handle, version = user_model(rt, user)

            def show_progress(done: int, total: int) -> None:
                bar.progress(done / total, text=f"{done}/{total} views")

            with rt.session() as session:
                forecast_tickers(session, SqlMarketStore(session), handle, tickers, day, who=Personalisation(user_id=user.id),
                                 progress=False, on_progress=show_progress)
            bar.progress(1.0, text="done")
            st.rerun()
        except Exception as exc:  # noqa: BLE001
            show_error(exc)

if not weeks:
    st.info("No views yet for this user. Generate some above (or run `make demo`).")
    st.stop()

week = st.selectbox("Week (decision date)", weeks, format_func=lambda d: d.isoformat(), key="week")
with rt.session() as session:
    cards = view_cards(session, user.id, week)
    store = SqlMarketStore(session)
    names = sorted({c.forecast.ticker for c in cards})
    chosen = st.multiselect("Show tickers", names, default=names, key="show_tickers")
    for card in [c for c in cards if c.forecast.ticker in chosen]:
        f, v = card.forecast, card.view
        st.divider()
        left, right = st.columns([1, 1])
        with left:
            st.subheader(f"{f.ticker} · week {f.target_start} to {f.target_end}")
            if v.is_signal:
                # Model output and posts are data: escaped, never markup or HTML.
                st.markdown(f"**Prediction: {md_escape(v.prediction_text or '')}**")
                st.markdown("**Positive developments**\n" + "\n".join(f"- {md_escape(p)}" for p in v.positives))
                st.markdown("**Potential concerns**\n" + "\n".join(f"- {md_escape(c)}" for c in v.concerns))
                st.markdown(f"**Analysis:** {md_escape(v.analysis)}")
                check = ViewCheck.from_json(f.check_result)
                if check is None:
                    st.caption("Not checked against its data (a view from before the checker).")
                elif check.passed:
                    st.success("Checked: " + md_escape(check.summary()))
                else:
                    st.warning("Checked: " + md_escape(check.summary()) + " — so it is not used as a signal.")
            else:
                st.warning(f"The model's answer did not parse ({v.error}); it is not used as a signal.")
                with st.container(border=True):
                    st.markdown(md_escape(f.raw_text[:1500]) or "(empty)")
            st.caption(f"written by {card.model_name} ({card.model_kind})")
            with st.expander("Details"):
                st.caption(f"parse {f.parse_status} · prompt {f.prompt_hash[:10]} · seed {f.seed} · decoding {f.decoding.get('mode', '?')}")
        with right:
            prices = price_context(store, f.ticker, f.forecast_date)
            if not prices.empty:
                band = pd.DataFrame({"start": [pd.Timestamp(f.target_start)], "end": [pd.Timestamp(f.target_end) + timedelta(hours=20)]})
                chart = alt.Chart(prices).mark_line().encode(x=alt.X("date:T", title=None), y=alt.Y("close:Q", title="close", scale=alt.Scale(zero=False)))
                marked = alt.Chart(band).mark_rect(opacity=0.2, color="orange").encode(x=alt.X("start:T", title=None), x2="end:T")
                st.altair_chart(marked + chart, width="stretch")
                st.caption("adjusted close; the shaded week is the forecast week")
            st.markdown("**Posts the view was built from**")
            if card.texts:
                for t in card.texts:
                    st.markdown(f"> {md_escape(t.text[:240])}")
                    st.caption(f"{t.published_at:%Y-%m-%d %H:%M} UTC")
            else:
                st.caption("No posts: this view rests on prices alone.")

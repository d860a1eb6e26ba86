"""Views: this week's views with the posts they were built from and the price around the week."""

from datetime import date

import streamlit as st

from advisor.data.store import PreloadedMarketStore, SqlMarketStore
from advisor.forecaster.checker import ViewCheck
from advisor.forecaster.queries import hit_rate, view_cards, view_result, view_weeks
from advisor.forecaster.service import Personalisation, forecast_tickers
from advisor.forecaster.tone import stored_tones
from dashboard import background
from dashboard.state import md_escape, require_market_data, require_user, setup, user_model
from dashboard.widgets import show_posts, show_price_week

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
    if st.button("Generate views", key="generate", disabled=not tickers):
        chosen_tickers, chosen_day, user_id = list(tickers), day, user.id

        def write_views(job: background.BackgroundJob) -> str:
            job.report(0, len(chosen_tickers), "loading your model")
            handle, _ = user_model(rt, user)
            job.report(0, len(chosen_tickers), "writing views")
            with rt.session() as session:
                outcomes = forecast_tickers(session, SqlMarketStore(session), handle, chosen_tickers, chosen_day, who=Personalisation(user_id=user_id),
                                            progress=False, on_progress=lambda done, total: job.report(done, total, "writing views"))
            return f"Wrote {len(outcomes)} views for {chosen_day}"

        background.start(user.id, "views", f"Views of {len(chosen_tickers)} tickers for {chosen_day}", write_views)
    background.show(user.id, "views")

if not weeks:
    st.info("No views yet for this user. Generate some above (or run `make demo`).")
    st.stop()

week = st.selectbox("Week (decision date)", weeks, format_func=lambda d: d.isoformat(), key="week")
with rt.session() as session:
    cards = view_cards(session, user.id, week)
    store = PreloadedMarketStore(session)  # each ticker's bars read once: every card's result and hit rate reads them
    names = sorted({c.forecast.ticker for c in cards})
    chosen = st.multiselect("Show tickers", names, default=names, key="show_tickers")
    shown = [c for c in cards if c.forecast.ticker in chosen]
    tones = stored_tones(rt.settings.resolved_model_dir, rt.session_factory, [t.text for c in shown for t in c.texts])
    for card in shown:
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
            result = view_result(store, f, v)
            if result is not None:
                (st.success if result.direction_right else st.error)("Result: " + result.text())
            elif v.is_signal:
                st.caption("Result: the forecast week is not over in the stored prices yet.")
            record = hit_rate(session, store, user.id, f.ticker, f.model_version_id, before=f.forecast_date)
            st.caption(f"This model on {f.ticker} before this week: {record.text()}.")
            st.caption(f"written by {card.model_name} ({card.model_kind})")
            with st.expander("Details"):
                st.caption(f"parse {f.parse_status} · prompt {f.prompt_hash[:10]} · seed {f.seed} · decoding {f.decoding.get('mode', '?')}")
        with right:
            show_price_week(store, f)
            show_posts(card.texts, tones)

"""Feedback: choose between two views of the same prompt, thumbs on views, and tuning runs."""

from datetime import date

import pandas as pd
import streamlit as st

from advisor.data.store import SqlMarketStore
from advisor.forecaster.generation import Decoding
from advisor.forecaster.queries import forecast_texts, view_cards, view_weeks
from advisor.forecaster.service import Personalisation, WindowConfig, forecast_windows
from advisor.forecaster.tone import stored_tones
from advisor.forecaster.views import parse_view
from dashboard import background
from dashboard.state import flash, md_escape, require_market_data, require_profile, require_user, setup, show_error, show_flash, user_model
from dashboard.widgets import show_posts, show_price_week
from rlhf import jobs
from rlhf.preferences import feedback_counts, pending_pairs, record_choice, record_rating, user_ratings
from rlhf.profiles import get_user

rt = setup()
require_market_data(rt)
user = require_user(rt)
profile = require_profile(rt, user)
st.title("Which views do you prefer?")
show_flash()

with rt.session() as session:
    counts = feedback_counts(session, get_user(session, user.name))
st.caption("Feedback so far: " + (", ".join(f"{k.replace('_', ' ')} {v}" for k, v in sorted(counts.items())) or "none yet"))


def show_view(title: str, raw_text: str) -> None:
    view = parse_view(raw_text)
    st.markdown(f"#### {title}")
    if view.is_signal:
        st.markdown(f"**Prediction: {md_escape(view.prediction_text or '')}**")
        st.markdown("**Positives**\n" + "\n".join(f"- {md_escape(p)}" for p in view.positives))
        st.markdown("**Concerns**\n" + "\n".join(f"- {md_escape(c)}" for c in view.concerns))
        st.markdown(f"**Analysis:** {md_escape(view.analysis)}")
    else:
        st.warning(f"Did not parse: {view.error}")
        with st.container(border=True):  # the model's text as it wrote it, wrapped (not a code block running off the page)
            st.markdown(md_escape(raw_text[:1500]) or "(empty)")


st.subheader("A / B")
with rt.session() as session:
    pairs = pending_pairs(session, get_user(session, user.name), limit=1)
    pair = [(a.id, a.raw_text, a.ticker, a.forecast_date, b.id, b.raw_text) for a, b in pairs]
    if pairs:
        with st.expander(f"What both views were built from: {pairs[0][0].ticker}'s prices and posts up to {pairs[0][0].forecast_date}", expanded=True):
            price_col, posts_col = st.columns(2)
            with price_col:
                show_price_week(SqlMarketStore(session), pairs[0][0], with_outcome=False)
            with posts_col:
                posts = forecast_texts(session, pairs[0][0])
                show_posts(posts, stored_tones(rt.settings.resolved_model_dir, rt.session_factory, [t.text for t in posts]))
if pair:
    a_id, a_text, ticker, day, b_id, b_text = pair[0]
    st.caption(f"{ticker}, decision {day}: two candidate views of the same prompt")
    left, right = st.columns(2)
    with left:
        show_view("View A", a_text)
    with right:
        show_view("View B", b_text)
    # Keys carry the pair: the next pair starts with no choice and no comment; nothing is chosen by default.
    with st.form(f"choice_{a_id}_{b_id}"):
        choice = st.radio("Your choice", ["A is better", "B is better", "Both are bad"], index=None, key=f"choice_radio_{a_id}_{b_id}", horizontal=True)
        comment = st.text_input("Comment (optional)", key=f"choice_comment_{a_id}_{b_id}")
        if st.form_submit_button("Save my choice", key="save_choice"):
            if choice is None:
                st.warning("Choose A, B or 'Both are bad' first: nothing was saved.")
            else:
                code = {"A is better": "a", "B is better": "b", "Both are bad": "both_bad"}[choice]
                try:
                    with rt.session() as session:
                        record_choice(session, get_user(session, user.name), profile, a_id, b_id, code, comment or None)
                    flash(f"Saved your choice for {ticker} ({choice}).")
                    st.rerun()
                except Exception as exc:  # noqa: BLE001
                    show_error(exc)
else:
    st.info("No pair waiting. Make one: the advisor writes two candidate views for a ticker and week.")
with st.expander("Make a new pair"):
    with rt.session() as session:
        tickers = SqlMarketStore(session).tickers()
    ticker = st.selectbox("Ticker", tickers, key="pair_ticker")
    day = st.date_input("Forecast date", value=date(2015, 6, 5), key="pair_date")
    if st.button("Write two candidates", key="make_pair"):
        pair_ticker, pair_day, user_id, profile_id = ticker, day, user.id, profile.id

        def write_pair(job: background.BackgroundJob) -> str:
            job.report(0, 1, "loading your model")
            handle, _ = user_model(rt, user)
            job.report(0, 1, f"sampling two views of {pair_ticker} for {pair_day}")
            with rt.session() as session:
                window = WindowConfig().build(SqlMarketStore(session), pair_ticker, pair_day)
                forecast_windows(session, handle, [window], Decoding(mode="sample", num_candidates=2, temperature=1.0),
                                 who=Personalisation(user_id=user_id, profile_id=profile_id), progress=False)
            job.report(1, 1, "written")
            return f"Two new candidate views of {pair_ticker} for {pair_day} are waiting above"

        background.start(user.id, "pair", f"Two candidate views of {ticker}", write_pair)
    background.show(user.id, "pair")

st.subheader("Thumbs")
with rt.session() as session:
    weeks = view_weeks(session, user.id)
    cards = view_cards(session, user.id, weeks[0]) if weeks else []
    items = [(c.forecast.id, c.forecast.ticker, c.forecast.forecast_date, c.view.prediction_text or "unparsed") for c in cards[:6]]
    stored = user_ratings(session, get_user(session, user.name), [i[0] for i in items])
for forecast_id, rating_value in stored.items():  # show what is stored: thumbs up is 1, down 0 in st.feedback
    if f"thumb_{forecast_id}" not in st.session_state:
        st.session_state[f"thumb_{forecast_id}"] = 1 if rating_value > 0 else 0
        st.session_state[f"rated_{forecast_id}"] = st.session_state[f"thumb_{forecast_id}"]
if not items:
    st.caption("No views to rate yet (see the Views page).")
for forecast_id, ticker, day, prediction in items:
    cols = st.columns([3, 1])
    cols[0].markdown(f"**{ticker}** {day}: {prediction}")
    with cols[1]:
        rating = st.feedback("thumbs", key=f"thumb_{forecast_id}")
    if rating is not None and st.session_state.get(f"rated_{forecast_id}") != rating:
        try:
            with rt.session() as session:
                record_rating(session, get_user(session, user.name), profile, forecast_id, 1 if rating == 1 else -1)
            st.session_state[f"rated_{forecast_id}"] = rating
            st.toast(f"Saved your rating of {ticker}")
        except Exception as exc:  # noqa: BLE001
            show_error(exc)

st.subheader("Tune my model")
st.caption("Runs `advisor rlhf run` for you in the background: candidates, outcome labels plus your feedback, reward model and DPO, "
           "then a comparison with the current model on later weeks. It takes minutes.")
if st.button("Start a tuning run", key="start_tuning"):
    job = jobs.start_tuning(rt.settings.data_dir, rt.settings.resolved_database_url, user.name)
    st.success(f"Started (process {job.pid}). Progress below.")


@st.fragment(run_every="5s")
def progress() -> None:
    with rt.session() as session:
        runs = jobs.training_runs(session, user.id)
        rows = [{"run": r.id, "kind": r.kind, "status": r.status, "started": r.started_at.strftime("%H:%M:%S"),
                 "error": r.error or ""} for r in runs]
    if rows:
        st.dataframe(pd.DataFrame(rows), hide_index=True)
        estimate = jobs.run_estimate(runs)
        if estimate:
            st.caption(estimate)
        latest = rows[0]
        if latest["status"] == "failed":
            st.error(f"The latest run ({latest['kind']}, run {latest['run']}) failed: {latest['error']}. Your active model is unchanged.")
    log = jobs.latest_log(rt.settings.data_dir, user.name)
    if log:
        st.code(jobs.tail(log) or "(starting…)")


progress()

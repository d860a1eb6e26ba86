"""Overview: this week's allocation, the paper account against buying and holding, the model's track record,
and the one next action."""

import altair as alt
import pandas as pd
import streamlit as st

from advisor.forecaster.modelstore import fingerprint, resolve_model_path
from advisor.overview import latest_track_record, next_action, paper_account_return, weekly_allocation
from advisor.portfolio import in_plain_words, params_from_profile
from dashboard.state import current_profile, require_market_data, require_user, setup, show_error
from rlhf.preferences import pending_pairs
from rlhf.profiles import get_user

rt = setup()
require_market_data(rt)
user = require_user(rt)
st.title(f"Overview — {user.name}")
profile = current_profile(rt, user)
if profile is None:
    st.info("No risk profile yet: answer the questionnaire first. Everything here is sized from it.")
    st.page_link("app_pages/profile.py", label="Go to Profile", icon="🧭")
    st.stop()
params = params_from_profile(profile)
st.caption(f"Profile v{profile.version} ({profile.label}). " + " ".join(in_plain_words(params)))

try:
    model_dir = rt.settings.resolved_model_dir
    base_fp = fingerprint(resolve_model_path(rt.settings.base_model, model_dir), cache_dir=model_dir)
except Exception as exc:  # noqa: BLE001 - a missing base model is shown, never a traceback
    show_error(exc)
    st.stop()

with rt.session() as session:
    allocation = weekly_allocation(session, user.id, params, base_fp)
    waiting = len(pending_pairs(session, get_user(session, user.name), limit=20))
    action, page = next_action(session, user.id, allocation, waiting)
    versus = paper_account_return(session, user.id)

st.subheader("Next")
st.markdown(f"**{action}**")
targets = {"Profile": "app_pages/profile.py", "Views": "app_pages/views.py", "Feedback": "app_pages/feedback.py",
           "Paper trading": "app_pages/trading.py", "Backtest": "app_pages/backtest.py"}
st.page_link(targets[page], label=f"Go to {page}")

left, right = st.columns(2)
with left:
    st.subheader("Target allocation")
    if allocation.weights:
        frame = pd.DataFrame([{"holding": t + (" (short)" if w < 0 else ""), "weight": abs(w)} for t, w in sorted(allocation.weights.items())]
                             + ([{"holding": "cash", "weight": allocation.cash}] if allocation.cash > 1e-6 else []))
        frame["share"] = frame["weight"].map(lambda w: f"{w:.1%}")
        chart = alt.Chart(frame).mark_arc(innerRadius=50).encode(
            theta="weight:Q", color=alt.Color("holding:N", legend=alt.Legend(title=None)), tooltip=["holding", "share"])
        st.altair_chart(chart, width="stretch")
        st.caption(f"For the week after {allocation.week}: {allocation.note}.")
    else:
        st.info(f"No allocation: {allocation.note}.")
with right:
    st.subheader("Paper account")
    if versus is None:
        st.info("No trades yet on the local paper account.")
    else:
        c1, c2 = st.columns(2)
        c1.metric("Your account", f"{versus.account_pct:+.2f}%")
        c2.metric("Buy and hold, same names", "—" if versus.benchmark_pct is None else f"{versus.benchmark_pct:+.2f}%",
                  delta=None if versus.benchmark_pct is None else f"{versus.account_pct - versus.benchmark_pct:+.2f} pts yours vs it",
                  delta_color="off")
        st.caption(f"{versus.start} to {versus.end}; buy and hold = equal weights in {', '.join(versus.tickers)} from the first fill.")

st.subheader("How the forecaster has done")
record = latest_track_record(rt.settings.data_dir / "reports")
if record is None:
    st.caption("No evaluation report yet (`advisor eval forecasts`, or `make demo`, writes one).")
else:
    title, table = record
    st.caption(title + ": share of weeks whose direction each predictor got right, with its 95% interval.")
    shown = table.assign(**{col: table[col].map(lambda v: "—" if v is None or pd.isna(v) else f"{v:.0%}") for col in ("direction right", "low", "high")})
    st.dataframe(shown, hide_index=True)

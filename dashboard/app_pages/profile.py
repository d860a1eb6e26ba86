"""Profile: the risk questionnaire, the resulting profile and its history."""

import pandas as pd
import streamlit as st

from dashboard.state import current_profile, require_user, setup, show_error
from rlhf.profiles import QUESTIONS, get_user, profile_history, save_profile, score_answers

rt = setup()
user = require_user(rt)
st.title(f"Risk profile — {user.name}")
profile = current_profile(rt, user)
if profile is None:
    st.info("No profile yet. Answer the questions below; the advisor sizes every position from the result.")
else:
    st.success(f"Current profile v{profile.version}: {score_answers(profile.answers).describe()}")

with st.form("questionnaire"):
    answers = {}
    for q in QUESTIONS:
        default = (profile.answers or {}).get(q.key, 1) if profile else 1
        choice = st.radio(q.text, q.options, index=int(default), key=f"q_{q.key}", horizontal=True)
        answers[q.key] = q.options.index(choice)
    submitted = st.form_submit_button("Save my profile")
if submitted:
    try:
        with rt.session() as session:
            saved, created = save_profile(session, user.name, answers)
            version = saved.version
        st.success(f"Saved as profile version {version}." if created else "Nothing changed: your answers match the current profile.")
    except Exception as exc:  # noqa: BLE001 - shown to the user
        show_error(exc)

with rt.session() as session:
    history = profile_history(session, get_user(session, user.name))
    rows = [
        {"version": p.version, "label": p.label, "score": round(p.score or 0, 2), "risk aversion": round(p.risk_aversion, 1),
         "max weight": f"{p.max_weight:.0%}", "max gross": f"{p.max_gross:.0%}", "shorts": p.allow_shorts,
         "target vol": f"{(p.target_vol or 0):.0%}", "cash buffer": f"{p.cash_buffer:.0%}", "created": p.created_at.strftime("%Y-%m-%d %H:%M")}
        for p in history
    ]
if rows:
    st.subheader("History")
    st.dataframe(pd.DataFrame(rows), hide_index=True)

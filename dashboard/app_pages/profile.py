"""Profile: the risk questionnaire, the resulting profile and its history."""

import pandas as pd
import streamlit as st

from advisor.portfolio import in_plain_words, params_from_profile
from dashboard.state import current_profile, flash, require_user, setup, show_error, show_flash
from rlhf.profiles import QUESTIONS, get_user, profile_history, save_profile, score_answers

rt = setup()
user = require_user(rt)
st.title(f"Risk profile — {user.name}")
show_flash()
profile = current_profile(rt, user)
if profile is None:
    st.info("No profile yet. Answer the questions below; the advisor sizes every position from the result.")
else:
    st.success(f"Current profile v{profile.version}: {score_answers(profile.answers).describe()}")
    st.markdown("\n".join(f"- {line}" for line in in_plain_words(params_from_profile(profile))))

# Widget keys carry the user's id: switching user shows that user's answers, never the previous user's.
with st.form(f"questionnaire_{user.id}"):
    answers: dict[str, int | None] = {}
    for q in QUESTIONS:
        stored = (profile.answers or {}).get(q.key) if profile else None
        choice = st.radio(q.text, q.options, index=None if stored is None else int(stored), key=f"q_{user.id}_{q.key}", horizontal=True)
        answers[q.key] = None if choice is None else q.options.index(choice)
    submitted = st.form_submit_button("Save my profile", key="save_profile")
if submitted:
    missing = [q.text for q in QUESTIONS if answers[q.key] is None]
    if missing:
        st.warning(f"Answer every question before saving ({len(missing)} of {len(QUESTIONS)} still open).")
    else:
        try:
            with rt.session() as session:
                saved, created = save_profile(session, user.name, {k: int(v) for k, v in answers.items() if v is not None})
                version = saved.version
            flash(f"Saved as profile version {version}." if created else "Nothing changed: your answers match the current profile.")
            st.rerun()
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

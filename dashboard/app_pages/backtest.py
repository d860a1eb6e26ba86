"""Backtest: what following the views would have done under a profile, against the benchmark."""

from datetime import date

import streamlit as st

from advisor.portfolio import PRESETS, params_from_profile
from backtest.queries import drawdown_frame, equity_frame, group_runs, metrics_table, user_runs
from backtest.runner import BENCHMARK, BacktestRequest, run_backtest
from dashboard.state import current_profile, require_market_data, require_user, setup, show_error
from rlhf.profiles import get_user
from rlhf.registry import user_versions

rt = setup()
require_market_data(rt)
user = require_user(rt)
st.title("Backtest")
profile = current_profile(rt, user)
choices = ([f"my profile (v{profile.version}, {profile.label})"] if profile else []) + list(PRESETS)
profile_choice = st.selectbox("Risk profile", choices, key="bt_profile")
c1, c2 = st.columns(2)
start = c1.date_input("From", value=date(2015, 4, 1), key="bt_start")
end = c2.date_input("To", value=date(2015, 7, 31), key="bt_end")
with rt.session() as session:
    versions = [(v.id, f"{v.id}: {v.name} ({v.kind})") for v in user_versions(session, get_user(session, user.name)) if v.kind != "reward"]
labels = dict(versions)
picked = st.multiselect("Model versions to compare", [v for v, _ in versions], default=[v for v, _ in versions][:1],
                        format_func=lambda i: labels[i], key="bt_versions")
if st.button("Run backtest", key="bt_run"):
    profile_id: int | None
    if profile is not None and profile_choice.startswith("my profile"):
        params, label, profile_id = params_from_profile(profile), profile_choice, profile.id
    else:
        params, label, profile_id = PRESETS[profile_choice], profile_choice, None
    groups: list[str] = []
    to_run: list[int | None] = list(picked) or [None]
    for version_id in to_run:
        try:
            with st.spinner(f"backtesting version {version_id}"):
                outcome = run_backtest(rt.session_factory, BacktestRequest(start=start, end=end, params=params, profile_label=label,
                                                                           model_version_id=version_id, user_id=user.id, profile_id=profile_id,
                                                                           references=version_id == picked[0] if picked else True),
                                       rt.settings.data_dir / "charts")
            groups.append(outcome.group_key)
            for note in outcome.notes:
                st.caption(note)
        except Exception as exc:  # noqa: BLE001
            show_error(exc)
    st.session_state[f"bt_groups_{user.id}"] = groups  # per user: switching user never shows another user's runs

groups = st.session_state.get(f"bt_groups_{user.id}") or []
with rt.session() as session:
    if not groups:
        past = user_runs(session, user.id)
        if not past:
            st.info("No backtests yet for this user: choose a period and run one.")
            st.stop()
        latest = past[0]
        groups = [str(latest.group_key)]
        st.caption(f"Showing your latest stored run: #{latest.id}, {latest.start} to {latest.end}, "
                   f"{latest.config.get('profile') or 'profile'} profile, stored {latest.created_at:%Y-%m-%d %H:%M}.")
    runs = [r for g in groups for r in group_runs(session, g, user.id)]
    series = {}
    for r in runs:
        label = f"{r.strategy} (v{r.model_version_id})" if r.strategy == "views" else r.strategy
        if label not in series:
            series[label] = r.id
    equity = equity_frame(session, series)
if equity.empty:
    st.warning("The runs stored no equity (a period without data?).")
    st.stop()
st.subheader("Equity (start = 1)")
st.line_chart(equity)
st.subheader("Drawdown (%)")
main = [c for c in equity.columns if c.startswith("views")] + [BENCHMARK]
st.area_chart(drawdown_frame(equity[[c for c in main if c in equity.columns]]))
st.subheader("Metrics")
st.dataframe(metrics_table(runs))

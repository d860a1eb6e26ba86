"""Backtest: what following the views would have done under a profile, against the benchmark."""

from datetime import date

import streamlit as st

from advisor.portfolio import PRESETS, params_from_profile
from backtest.queries import drawdown_frame, equity_frame, group_runs, metrics_table, user_runs
from backtest.runner import BENCHMARK, BacktestRequest, run_backtest
from dashboard.formatting import line_chart, show_table
from dashboard.state import current_profile, require_market_data, require_user, setup, show_error
from rlhf.profiles import get_user
from rlhf.registry import user_versions

METRIC_COLUMNS = {
    "strategy": ("Strategy", None), "total_return": ("Total return", "percent"), "annualized_return": ("Annualised return", "percent"),
    "annualized_volatility": ("Annualised volatility", "percent"), "sharpe": ("Sharpe", "%.2f"), "sortino": ("Sortino", "%.2f"),
    "max_drawdown": ("Max drawdown", "percent"), "max_drawdown_days": ("Longest drawdown (days)", "%d"),
    "turnover_per_year": ("Turnover per year", "%.1fx"), "avg_gross_exposure": ("Average gross exposure", "percent"),
    "hit_rate": ("Direction hit rate", "percent"), "traded_views": ("Views traded", "%d"), "run": ("Run", None),
}

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
        label = f"following the views of model version {r.model_version_id}" if r.strategy == "views" else r.strategy
        if label not in series:
            series[label] = r.id
    equity = equity_frame(session, series)
if equity.empty:
    st.warning("The runs stored no equity (a period without data?).")
    st.stop()
st.subheader("Growth of $1")
st.altair_chart(line_chart(equity, y_title="Value of $1 invested", y_format="$.2f"), width="stretch")
st.subheader("Drawdown")
main = [c for c in equity.columns if c.startswith("following the views")] + [BENCHMARK]
st.altair_chart(line_chart(drawdown_frame(equity[[c for c in main if c in equity.columns]]) / 100, y_title="Below the running peak", y_format=".1%", area=True),
                width="stretch")
st.subheader("Metrics")
show_table(metrics_table(runs).reset_index(), METRIC_COLUMNS)
st.caption("Returns, volatility and drawdown are for the whole period chosen; Sharpe and Sortino are annualised from daily returns with a zero risk-free rate.")

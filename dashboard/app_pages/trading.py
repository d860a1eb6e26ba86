"""Paper trading: account, positions, orders, fills, P&L; rebalance (dry run first, then confirm); kill switch."""

from datetime import date

import pandas as pd
import streamlit as st

from advisor.portfolio import params_from_profile
from advisor.trading.bot import RebalanceOptions, kill, resume
from advisor.trading.status import account_status, equity_history
from advisor.trading.wiring import user_bot, user_broker
from dashboard.state import flash, require_market_data, require_profile, require_user, setup, show_error, show_flash

rt = setup()
require_market_data(rt)
user = require_user(rt)
profile = require_profile(rt, user)
params = params_from_profile(profile)
show_flash()
st.title(f"Paper trading ({rt.settings.broker.kind} paper broker)")
historical = st.toggle("Trade a historical week (local broker, simulated clock)", value=True, key="historical")
as_of = st.date_input("As of", value=date(2015, 6, 5), key="as_of") if historical else None

try:
    broker = user_broker(rt, user.id, params.max_weight, as_of=as_of)
    account = broker.get_account()
    positions = broker.get_positions()
except Exception as exc:  # noqa: BLE001 - broker errors are shown, never a traceback
    show_error(exc)
    st.stop()

m1, m2, m3 = st.columns(3)
m1.metric("Equity", f"{account.equity:,.2f}")
m2.metric("Cash", f"{account.cash:,.2f}")
m3.metric("Positions", len(positions))
if positions:
    st.dataframe([{"ticker": p.ticker, "qty": round(p.qty, 4), "avg entry": round(p.avg_entry_price, 2),
                   "market value": None if p.market_value is None else round(p.market_value, 2)} for p in positions], hide_index=True)

st.subheader("Rebalance now")
try:
    bot = user_bot(rt, user.id, params, broker)
except Exception as exc:  # noqa: BLE001 - a missing base model is shown, never a traceback
    show_error(exc)
    st.stop()
if st.button("Preview the orders (dry run)", key="dry_run"):
    try:
        plan = bot.run_once(RebalanceOptions(dry_run=True))
        parts = {(t.ticker, t.side): sum(1 for o in plan.planned if (o.ticker, o.side) == (t.ticker, t.side)) for t in plan.planned}
        st.session_state["plan"] = [(t.side.value, round(t.qty, 4), t.ticker, round(t.price, 2), round(t.notional), f"{t.target_weight:.1%}",
                                     f"{t.sequence + 1} of {parts[(t.ticker, t.side)]}") for t in plan.planned]
        st.session_state["plan_notes"] = plan.messages
    except Exception as exc:  # noqa: BLE001
        show_error(exc)
if "plan" in st.session_state:
    plan_rows = st.session_state["plan"]
    st.dataframe(pd.DataFrame([dict(zip(["side", "qty", "ticker", "price", "notional", "target weight", "part"], row, strict=True)) for row in plan_rows])
                 if plan_rows else pd.DataFrame([{"orders": "none"}]), hide_index=True)
    for note in st.session_state.get("plan_notes", []):
        st.caption(note)
    if plan_rows and st.button("Confirm and send these orders", key="confirm"):
        try:
            report = bot.run_once(RebalanceOptions(poll_timeout_s=10, poll_interval_s=0))
            del st.session_state["plan"]
            rejected = "".join(f"; {cid}: {reason}" for cid, reason in report.rejected.items())
            flash(f"Sent {len(report.sent)} orders; " + ", ".join(f"{k.split('-')[3]} {v}" for k, v in report.final.items()) + rejected)
            st.rerun()  # the account, positions and orders above are read again
        except Exception as exc:  # noqa: BLE001
            show_error(exc)

with rt.session() as session:
    status = account_status(session, user.id, broker.name)
    history = equity_history(session, user.id, broker.name, until=broker.clock())
st.subheader("Bot")
st.write(f"status **{status.bot_status}**" + (" — **kill switch on**" if status.kill_requested else "") + f"; last decision week {status.last_decision_week}")
k1, k2 = st.columns(2)
if k1.button("Kill switch: cancel open orders and stop", type="primary", key="kill"):
    try:
        canceled = kill(rt.session_factory, broker, user.id)
        st.warning(f"Kill switch on: {len(canceled)} open orders canceled.")
    except Exception as exc:  # noqa: BLE001
        show_error(exc)
if status.kill_requested and k2.button("Resume", key="resume"):
    resume(rt.session_factory, broker.name, user.id)
    st.rerun()
if not history.empty:
    st.subheader("P&L over time")
    st.line_chart(history.set_index("date")["equity"])
st.subheader("Orders")
if status.orders.empty:
    st.caption("No orders yet.")
else:
    st.dataframe(status.orders, hide_index=True)
st.subheader("Fills")
if status.fills.empty:
    st.caption("No fills yet.")
else:
    st.dataframe(status.fills, hide_index=True)
if not status.events.empty:
    with st.expander("Bot log"):
        st.dataframe(status.events, hide_index=True)

"""Paper trading: account, positions, orders, fills, P&L; rebalance (dry run first, then confirm); kill switch."""

from datetime import date

import pandas as pd
import streamlit as st

from advisor.portfolio import params_from_profile
from advisor.trading.bot import RebalanceOptions, kill, resume
from advisor.trading.status import account_status, equity_history
from advisor.trading.wiring import user_bot, user_broker
from dashboard.formatting import line_chart, money, show_table
from dashboard.state import flash, require_market_data, require_profile, require_user, setup, show_error, show_flash

PLAN_COLUMNS = {"side": ("Side", None), "qty": ("Shares", "%.4f"), "ticker": ("Ticker", None), "price": ("Price", "dollar"),
                "notional": ("Amount", "dollar"), "target_weight": ("Target weight", "percent"), "part": ("Part", None)}
ORDER_COLUMNS = {"week": ("Decision week", None), "ticker": ("Ticker", None), "side": ("Side", None), "qty": ("Shares", "%.4f"),
                 "status": ("Status", None), "filled_qty": ("Filled", "%.4f"), "avg_price": ("Average fill price", "dollar"),
                 "submitted_at": ("Submitted", None), "error": ("Error", None), "client_order_id": ("Order id", None)}
FILL_COLUMNS = {"filled_at": ("Filled at", None), "ticker": ("Ticker", None), "side": ("Side", None), "qty": ("Shares", "%.4f"),
                "price": ("Price", "dollar"), "commission": ("Commission", "dollar"), "order": ("Order id", None)}

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
m1.metric("Equity", money(account.equity))
m2.metric("Cash", money(account.cash))
m3.metric("Positions", len(positions))
if positions:
    show_table(pd.DataFrame([{"ticker": p.ticker, "qty": p.qty, "avg_entry": p.avg_entry_price, "market_value": p.market_value} for p in positions]),
               {"ticker": ("Ticker", None), "qty": ("Shares", "%.4f"), "avg_entry": ("Average entry", "dollar"), "market_value": ("Market value", "dollar")})

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
        st.session_state["plan"] = [{"side": t.side.value, "qty": t.qty, "ticker": t.ticker, "price": t.price, "notional": t.notional,
                                     "target_weight": t.target_weight, "part": f"{t.sequence + 1} of {parts[(t.ticker, t.side)]}"} for t in plan.planned]
        st.session_state["plan_notes"] = plan.messages
    except Exception as exc:  # noqa: BLE001
        show_error(exc)
if "plan" in st.session_state:
    plan_rows = st.session_state["plan"]
    if plan_rows:
        show_table(pd.DataFrame(plan_rows), PLAN_COLUMNS)
    else:
        st.caption("No orders: the account already holds the target.")
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
st.write(f"status **{status.bot_status}**" + (" — **kill switch on**" if status.kill_requested else "") + f"; last decision week {status.last_decision_week or 'none yet'}")
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
    st.altair_chart(line_chart(history.set_index("date")[["equity"]].rename(columns={"equity": "paper account equity"}),
                               y_title="Equity", y_format="$,.0f"), width="stretch")
st.subheader("Orders")
if status.orders.empty:
    st.caption("No orders yet.")
else:
    show_table(status.orders, ORDER_COLUMNS)
st.subheader("Fills")
if status.fills.empty:
    st.caption("No fills yet.")
else:
    show_table(status.fills, FILL_COLUMNS)
if not status.events.empty:
    with st.expander("Bot log"):
        show_table(status.events, {"at": ("When", None), "level": ("Level", None), "message": ("Message", None)})

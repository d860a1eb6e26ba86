"""Models: versions with parents and metrics; activate and roll back."""

import pandas as pd
import streamlit as st

from dashboard.formatting import show_table
from dashboard.state import require_user, setup, show_error
from rlhf.profiles import get_user
from rlhf.registry import activate, activation_history, active_version, rollback, user_versions

rt = setup()
user = require_user(rt)
st.title("Models")
with rt.session() as session:
    row = get_user(session, user.name)
    active = active_version(session, row)
    versions = user_versions(session, row)
    history = activation_history(session, row)
    table = [
        {"id": v.id, "name": v.name, "kind": v.kind, "parent": v.parent_id, "yours": v.user_id == user.id,
         "active": bool(active and active.id == v.id), "created": v.created_at.strftime("%Y-%m-%d %H:%M"),
         "metrics": ", ".join(f"{k.replace('_', ' ')} {x:.4g}" if isinstance(x, float) else f"{k.replace('_', ' ')} {x}"
                              for k, x in (v.metrics or {}).items() if not isinstance(x, (dict, list)))}
        for v in versions
    ]
    log = [{"When": h.activated_at.strftime("%Y-%m-%d %H:%M"), "Version": h.model_version_id, "Why": h.reason} for h in history]
if not table:
    st.info("No model versions yet: run `advisor train sft` (or `make demo`) to train the first adapter.")
    st.stop()
st.caption(f"Active for {user.name}: " + (f"version {active.id} ({active.name})" if active else "none chosen — the newest shared SFT adapter serves you"))
show_table(pd.DataFrame(table), {"id": ("Version", None), "name": ("Name", None), "kind": ("Kind", None), "parent": ("Parent version", None),
                                 "yours": ("Yours", None), "active": ("Active", None), "created": ("Created", None), "metrics": ("Metrics", None)})
servable = [int(str(v["id"])) for v in table if v["kind"] != "reward"]
choice = st.selectbox("Version", servable, key="version_choice")
c1, c2 = st.columns(2)
if c1.button("Activate", key="activate"):
    try:
        with rt.session() as session:
            activate(session, get_user(session, user.name), choice, "activated in the dashboard")
        st.success(f"Version {choice} now writes your views.")
        st.rerun()
    except Exception as exc:  # noqa: BLE001
        show_error(exc)
if c2.button("Roll back", key="rollback"):
    try:
        with rt.session() as session:
            version = rollback(session, get_user(session, user.name))
            st.success(f"Rolled back to version {version.id} ({version.name}).")
        st.rerun()
    except Exception as exc:  # noqa: BLE001
        show_error(exc)
if log:
    st.subheader("Activation history")
    st.dataframe(pd.DataFrame(log), hide_index=True)

"""What every page needs: the runtime (settings from the command line or environment), the selected user,
the model for that user, and friendly stops for an empty database. No page logic lives here."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import streamlit as st
from sqlalchemy import select

from advisor.config import load_settings
from advisor.data.queries import store_summary
from advisor.errors import AdvisorError
from advisor.forecaster.versions import load_serving_model
from advisor.runtime import Runtime
from db.models import RiskProfile, User
from db.queries import find_user, latest_profile
from rlhf.profiles import ensure_user

USER_KEY = "advisor_user"
_SELECT_NEXT = "_select_user_next"  # a user to select on the next run (a widget's value cannot change after it is drawn)
_FLASH = "_flash"


def flash(message: str) -> None:
    """A confirmation shown once, on the next run (pages call ``st.rerun()`` after a write so they show fresh data)."""
    st.session_state[_FLASH] = message


def show_flash() -> None:
    message = st.session_state.pop(_FLASH, None)
    if message:
        st.success(message)


def _argv_settings() -> dict[str, Any]:
    """``streamlit run dashboard/app.py -- --data-dir var --db-url ...`` (unknown flags ignored)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--config")
    parser.add_argument("--data-dir")
    parser.add_argument("--db-url")
    parser.add_argument("--model-dir")
    known, _ = parser.parse_known_args(sys.argv[1:])
    return {"config": known.config, "data_dir": known.data_dir, "database_url": known.db_url, "model_dir": known.model_dir}


@st.cache_resource(show_spinner=False)
def _runtime(config: str | None, data_dir: str | None, database_url: str | None, model_dir: str | None, env_key: str) -> Runtime:
    settings = load_settings(config, data_dir=data_dir, database_url=database_url, model_dir=model_dir)
    return Runtime(settings)


def runtime() -> Runtime:
    import os

    args = _argv_settings()
    env_key = "|".join(f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("ADVISOR_"))
    rt = _runtime(args["config"], args["data_dir"], args["database_url"], args["model_dir"], env_key)
    if not rt.database_is_current():
        st.error(f"The database at {rt.database_label} is not initialised. Run `advisor init` (or `make demo`) first.")
        st.stop()
    return rt


def users(rt: Runtime) -> list[str]:
    with rt.session() as session:
        return list(session.scalars(select(User.name).order_by(User.name)))


def user_selector(rt: Runtime) -> None:
    """Sidebar: choose a user or create one. Every page reads only this user's data."""
    names = users(rt)
    with st.sidebar:
        st.markdown("### Who is using the advisor?")
        chosen = st.session_state.pop(_SELECT_NEXT, None)
        if chosen in names:
            st.session_state["user_select"] = chosen
        if names:
            current = st.session_state.get(USER_KEY)
            index = names.index(current) if current in names else 0
            st.session_state[USER_KEY] = st.selectbox("User", names, index=index, key="user_select")
        else:
            st.caption("No users yet: create one below.")
            st.session_state[USER_KEY] = None
        created = st.session_state.pop("_user_created", None)
        if created:
            st.success(f"Created user {created}: answer the questionnaire on the Profile page next.")
        with st.form("new_user", clear_on_submit=True):
            name = st.text_input("New user name", key="new_user_name")
            if st.form_submit_button("Create user", key="create_user"):
                _create_user(rt, name)


def _create_user(rt: Runtime, name: str) -> None:

    if not name.strip():
        st.error("Enter a name for the new user.")
        return
    try:
        with rt.session() as session:
            existed = find_user(session, name.strip()) is not None
            user = ensure_user(session, name)
            created = user.name
    except Exception as exc:  # noqa: BLE001 - shown to the user
        show_error(exc)
        return
    st.session_state[USER_KEY] = created
    st.session_state[_SELECT_NEXT] = created
    st.session_state["_user_created"] = created if not existed else None
    st.rerun()


def current_user(rt: Runtime) -> User | None:
    name = st.session_state.get(USER_KEY)
    if not name:
        return None
    with rt.session() as session:
        return find_user(session, name)


def require_user(rt: Runtime) -> User:
    user = current_user(rt)
    if user is None:
        st.info("Choose or create a user in the sidebar to begin.")
        st.stop()
    return user


def current_profile(rt: Runtime, user: User) -> RiskProfile | None:
    with rt.session() as session:
        return latest_profile(session, user.id)


def require_profile(rt: Runtime, user: User) -> RiskProfile:
    profile = current_profile(rt, user)
    if profile is None:
        st.info(f"{user.name} has no risk profile yet: answer the questionnaire on the **Profile** page first.")
        st.stop()
    return profile


def require_market_data(rt: Runtime) -> None:
    with rt.session() as session:
        summary = store_summary(session)
    if summary.bars == 0:
        st.warning(
            "There is no market data yet. Import the offline bundle with `advisor data import ../shared/data/stocknet` "
            "(or run `make demo`), or sync live data with `advisor data sync --tickers AAPL --start 2024-01-01`."
        )
        st.stop()


def user_model(rt: Runtime, user: User) -> tuple[Any, Any]:
    """The user's serving model (active adapter, else the shared SFT adapter, else the base), loaded once per process."""
    return load_serving_model(rt.session_factory, rt.settings.base_model, rt.settings.resolved_model_dir, user.id)


def setup() -> Runtime:
    """What each page calls first: the runtime and the sidebar user selector (rendered by every page so it
    is always there, whichever page a visitor lands on)."""
    rt = runtime()
    user_selector(rt)
    with st.sidebar.expander("Details"):  # for the curious; not what a user needs to see
        st.caption(f"database: {rt.database_label}")
    return rt


def show_error(exc: Exception) -> None:
    """A readable message for anything the user can fix; never a traceback."""
    if isinstance(exc, AdvisorError):
        st.error(str(exc))
    else:
        st.error(f"Something went wrong: {type(exc).__name__}: {exc}")


_MARKDOWN_SPECIAL = "\\`*_{}[]<>()#+-.!|$~"


def md_escape(text: str) -> str:
    """Text shown literally inside Streamlit markdown (model output and posts are data, not markup)."""
    return "".join("\\" + ch if ch in _MARKDOWN_SPECIAL else ch for ch in text)

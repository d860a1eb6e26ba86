"""The personal advisor in the browser: ``streamlit run dashboard/app.py -- --data-dir var``.

One page per task; each page starts with ``dashboard.state.setup()`` (runtime + the sidebar user selector),
and every page shows only the selected user's data.
"""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `streamlit run` puts dashboard/ first, not the repository
    sys.path.insert(0, str(ROOT))

st.set_page_config(page_title="Robo-advisor", layout="wide")
# The page scripts live in app_pages/, not pages/: with a pages/ folder beside this file Streamlit starts in its
# old folder-based mode, and a first request to a deep link (/views) never runs this file (no navigation, no layout).
pages = [
    st.Page("app_pages/overview.py", title="Overview", icon="🏠", url_path="overview", default=True),
    st.Page("app_pages/profile.py", title="Profile", icon="🧭", url_path="profile"),
    st.Page("app_pages/views.py", title="Views", icon="📰", url_path="views"),
    st.Page("app_pages/feedback.py", title="Feedback", icon="👍", url_path="feedback"),
    st.Page("app_pages/backtest.py", title="Backtest", icon="📈", url_path="backtest"),
    st.Page("app_pages/trading.py", title="Paper trading", icon="💼", url_path="trading"),
    st.Page("app_pages/models.py", title="Models", icon="🧠", url_path="models"),
]
st.navigation(pages).run()

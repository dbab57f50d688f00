"""Streamlit entry point: `streamlit run app.py` (or `make run`).

One engine per server process (``ui.state``), a sidebar on every page, seven pages.
"""

import logging

import streamlit as st

from core import views
from ui.auth import require_login
from ui.sidebar import render_pending_approvals, render_sidebar
from ui.state import load_context

st.set_page_config(page_title="Tiered trader", page_icon=":material/candlestick_chart:", layout="wide")
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
logging.getLogger("apscheduler").setLevel(logging.WARNING)  # one INFO line per job run otherwise

ctx = load_context()
require_login(ctx.settings)  # no-op on 127.0.0.1 without APP_PASSWORD
# the count of waiting intents in the navigation; the sidebar's fragment reruns the app when it changes
pending = views.pending_count(ctx.store)
st.session_state["_nav_pending"] = pending
badge = st.sidebar.container()  # top of the sidebar: the pending count, filled once the navigation has its pages
render_sidebar(ctx)

pages = [
    st.Page("pages/live_signals.py", title="Live signals", icon=":material/monitoring:", default=True),
    st.Page("pages/approvals.py", title=f"Approvals ({pending})" if pending else "Approvals",
            icon=":material/task_alt:"),
    st.Page("pages/baskets.py", title="Basket health", icon=":material/hub:"),
    st.Page("pages/risk.py", title="Risk gauges", icon=":material/speed:"),
    st.Page("pages/history.py", title="Trade history", icon=":material/receipt_long:"),
    st.Page("pages/kpis.py", title="KPIs", icon=":material/analytics:"),
    st.Page("pages/research.py", title="Research", icon=":material/science:"),
]
nav = st.navigation(pages)
with badge:
    render_pending_approvals(ctx, on_approvals=nav.url_path == "approvals")
nav.run()

"""The app's password gate (issue 9): off on loopback by default, required before listening elsewhere.

Streamlit binds to 127.0.0.1 (``.streamlit/config.toml``); only this laptop can reach it. To open it to a
network (``--server.address 0.0.0.0``) set ``APP_PASSWORD`` (environment, ``.env`` or
``.streamlit/secrets.toml``): every browser session must then enter it once. Without a password the app
refuses to show anything on a non-loopback address, rather than put an order button on the network.
"""

from __future__ import annotations

import hmac
import time

import streamlit as st

from core.config import Settings

LOOPBACK = {"localhost", "127.0.0.1", "::1", ""}
MAX_TRIES = 5  # then a pause, so the password cannot be guessed quickly
LOCKOUT_S = 30.0


def bound_to_loopback() -> bool:
    return str(st.get_option("server.address") or "").strip().lower() in LOOPBACK


def require_login(settings: Settings) -> None:
    """Stop the page unless this session may see it."""
    secret = settings.app_password.get_secret_value() if settings.app_password else ""
    if not secret:
        if bound_to_loopback():
            return
        st.error("This app is listening beyond this computer but no APP_PASSWORD is set: nothing is shown. "
                 "Set APP_PASSWORD (environment or .streamlit/secrets.toml) or bind to 127.0.0.1.")
        st.stop()
    if st.session_state.get("_authenticated"):
        return
    st.title("Tiered trader")
    locked_until = float(st.session_state.get("_login_locked_until", 0.0))
    if time.monotonic() < locked_until:
        st.error(f"Too many wrong passwords: try again in {locked_until - time.monotonic():.0f} s.")
        st.stop()
    with st.form("login"):
        entered = st.text_input("Password", type="password", key="login_password")
        submitted = st.form_submit_button("Sign in")
    if submitted:
        if hmac.compare_digest(entered.encode(), secret.encode()):
            st.session_state["_authenticated"] = True
            st.session_state.pop("login_password", None)
            st.rerun()
        tries = int(st.session_state.get("_login_failures", 0)) + 1
        st.session_state["_login_failures"] = tries
        if tries >= MAX_TRIES:
            st.session_state["_login_locked_until"] = time.monotonic() + LOCKOUT_S
            st.session_state["_login_failures"] = 0
        st.error("Wrong password.")
    st.stop()

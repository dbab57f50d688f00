"""The app's password gate (issues 9, 30): off on loopback by default, required before listening elsewhere.

Streamlit binds to 127.0.0.1 (``.streamlit/config.toml``); only this laptop can reach it. To open it to a
network (``--server.address 0.0.0.0``, a LAN address, or an empty address, which listens on every interface)
set ``APP_PASSWORD`` (environment, ``.env`` or ``.streamlit/secrets.toml``): every browser session must then
enter it once. Without a password the app refuses to show anything on a non-loopback address, rather than put
an order button on the network.

Wrong passwords are counted in this server process, not in the browser session (a reload or a new tab starts
a new session, and used to start the count again): per client address (``st.context.ip_address``; a local
browser has none and counts as ``local``) and for the whole process, so an attacker changing addresses is slowed
too. After ``MAX_TRIES`` failures the address is locked out for ``APP_LOGIN_LOCKOUT_S`` (30 s), doubling with
each further failure up to ``LOCKOUT_MAX_S``; ``GLOBAL_MAX_TRIES`` failures from all addresses lock every
address the same way. While locked out no password is checked, the right one included. Each failure is logged
(address and count, never what was typed).
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import streamlit as st

from core.config import Settings

log = logging.getLogger(__name__)

MAX_TRIES = 5  # per address: then a lockout, so the password cannot be guessed quickly
GLOBAL_MAX_TRIES = 20  # from all addresses together (an attacker with many addresses)
LOCKOUT_S = 30.0  # the first lockout (APP_LOGIN_LOCKOUT_S); each later failure doubles it
LOCKOUT_MAX_S = 3600.0
ADDRESSES_KEPT = 10_000  # the store forgets the oldest addresses past this (memory stays bounded)
GLOBAL = "*"  # the whole process's entry in the store


def is_loopback(address: str | None) -> bool:
    """``127.0.0.1``, ``::1``, ``localhost``; an empty address is every interface, not loopback."""
    a = str(address or "").strip().strip("[]").lower()
    if a == "localhost":
        return True
    try:
        return ipaddress.ip_address(a).is_loopback
    except ValueError:
        return False


def bound_to_loopback() -> bool:
    return is_loopback(st.get_option("server.address"))


@dataclass
class _Failures:
    count: int = 0
    locked_until: float = 0.0


class LoginGuard:
    """Failed sign-ins per client address and for the whole process; thread-safe (every browser session of the
    server shares the one instance, ``GUARD``). ``clock`` is injectable: tests move it instead of waiting."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._by_address: OrderedDict[str, _Failures] = OrderedDict()

    def locked_for(self, address: str) -> float:
        """Seconds this address must still wait before a password is checked (0: it may try now)."""
        now = self.clock()
        with self._lock:
            waits = [f.locked_until - now for key in (address, GLOBAL) if (f := self._by_address.get(key))]
        return max([0.0, *waits])

    def failed(self, address: str, lockout_s: float = LOCKOUT_S) -> tuple[int, float]:
        """Record a wrong password from ``address``: (its failures so far, the lockout it now has in seconds).
        ``lockout_s`` is the first lockout (APP_LOGIN_LOCKOUT_S); each further failure doubles it."""
        now = self.clock()
        with self._lock:
            out = []
            for key, limit in ((address, MAX_TRIES), (GLOBAL, GLOBAL_MAX_TRIES)):
                f = self._by_address.pop(key, None) or _Failures()
                f.count += 1
                if f.count >= limit:
                    f.locked_until = now + min(LOCKOUT_MAX_S, lockout_s * 2.0 ** (f.count - limit))
                self._by_address[key] = f  # most recent last
                out.append(f)
            while len(self._by_address) > ADDRESSES_KEPT:
                oldest = next(k for k in self._by_address if k != GLOBAL)
                del self._by_address[oldest]
        return out[0].count, max(0.0, max(f.locked_until for f in out) - now)

    def succeeded(self, address: str) -> None:
        """The right password: this address starts afresh, and so does the process's count (a locked-out
        process checks no password, so this never ends a lockout)."""
        with self._lock:
            self._by_address.pop(address, None)
            self._by_address.pop(GLOBAL, None)

    def failures(self, address: str) -> int:
        with self._lock:
            f = self._by_address.get(address)
            return f.count if f else 0

    def reset(self) -> None:
        with self._lock:
            self._by_address.clear()


GUARD = LoginGuard()


def client_address() -> str:
    """The browser's address as the server saw it (``local`` for this machine, or when Streamlit has none)."""
    try:
        ip = st.context.ip_address
    except Exception:  # noqa: BLE001 - outside a session (bare mode)
        ip = None
    return ip if isinstance(ip, str) and ip else "local"


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
    address = client_address()
    with st.form("login"):
        entered = st.text_input("Password", type="password", key="login_password")
        submitted = st.form_submit_button("Sign in")
    wait = GUARD.locked_for(address)
    if submitted and wait > 0:
        # not even checked: the right password during a lockout is refused like any other
        log.warning("sign-in refused: %s is locked out for %.0f s more (%d failures)", address, wait,
                    GUARD.failures(address))
    elif submitted:
        if hmac.compare_digest(entered.encode(), secret.encode()):
            GUARD.succeeded(address)
            st.session_state["_authenticated"] = True
            st.session_state.pop("login_password", None)
            log.info("sign-in from %s", address)
            st.rerun()
        count, wait = GUARD.failed(address, settings.app_login_lockout_s)
        log.warning("sign-in failed from %s: wrong password (%d failures from this address%s)", address, count,
                    f"; locked out for {wait:.0f} s" if wait > 0 else "")
        if wait <= 0:
            st.error("Wrong password.")
    if wait > 0:
        st.error(f"Too many wrong passwords: try again in {wait:.0f} s.")
    st.stop()

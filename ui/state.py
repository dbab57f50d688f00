"""What every page needs: settings, the process's one runtime, a read-only store, and command sending.

Streamlit-specific glue lives here (and in ``ui/``), never in ``core/``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import streamlit as st

from core import views
from core.config import ConfigError, Settings, load_settings
from core.runtime import EngineLockedError, Runtime, shared_runtime
from core.state.store import Store

log = logging.getLogger(__name__)


@dataclass
class AppContext:
    settings: Settings
    runtime: Runtime | None  # None: another process owns the engine; this one only views and sends commands
    store: Store  # read-only connection for this browser session
    note: str | None = None

    def now(self) -> datetime:
        if self.runtime is not None:
            return self.runtime.clock.now()
        hb = self.store.one("SELECT ts FROM heartbeat WHERE name='tick'")
        return datetime.fromisoformat(hb["ts"]) if hb else datetime.now(UTC)

    def wall_now(self) -> float:
        """The wall clock the approval windows run on (POSIX seconds; the engine's own when it runs here)."""
        return self.runtime.wall_now() if self.runtime is not None else time.time()

    def speed(self) -> float:
        """Market seconds per wall second (SIM_SPEED; 1 on a real market)."""
        if self.runtime is not None:
            return self.runtime.speed
        return float(views.runtime_heartbeat(self.store).get("speed") or 1.0)  # the engine's process writes it


SECRET_NAMES = ("ALPACA_API_KEY", "ALPACA_SECRET_KEY", "OPENAI_API_KEY", "REDIS_URL", "SLACK_WEBHOOK_URL",
                "EDGAR_USER_AGENT", "APP_PASSWORD")


def secret_overrides() -> dict[str, str]:
    """Keys from .streamlit/secrets.toml (git-ignored); the environment and .env are read by Settings itself."""
    out: dict[str, str] = {}
    try:
        for name in SECRET_NAMES:
            if name in st.secrets:
                out[name.lower()] = str(st.secrets[name])
    except (FileNotFoundError, st.errors.StreamlitSecretNotFoundError):  # no secrets file: fine
        pass
    return out


def app_settings() -> Settings:
    return load_settings(**secret_overrides())


@st.cache_resource(show_spinner=False)
def _runtime(db_path: str) -> tuple[Runtime | None, str | None]:
    # keyed by the database path: one engine per database per server process, however many tabs or reruns
    settings = app_settings()
    start_research_warm_up()
    try:
        return shared_runtime(settings), None
    except EngineLockedError as e:
        return None, f"{e}; this window shows its data and sends commands to it"


_WARM_UP: list[threading.Thread] = []


def start_research_warm_up() -> threading.Thread | None:
    """Compile (or load) the research kernel in the background, once per server process, so the first Research
    click does not wait for it (core.research.warm.warm_up). ``RESEARCH_WARM_UP=0`` turns it off."""
    if os.environ.get("RESEARCH_WARM_UP", "1") == "0" or _WARM_UP:
        return None

    def run() -> None:
        from core.research.warm import warm_up

        try:
            log.info("research engine ready in %.1f s", warm_up())
        except Exception:  # a warm-up never stops the app: the first replay compiles instead, and says so
            log.exception("research engine warm-up failed")

    t = threading.Thread(target=run, name="research-warm-up", daemon=True)
    _WARM_UP.append(t)
    t.start()
    return t


def own_the_navigation() -> None:
    """Make app.py's ``st.navigation`` the only page list, even for a bookmarked page opened first.

    Streamlit treats a ``pages/`` folder beside the entry script as an old-style multipage app until a run
    calls ``st.navigation``; a fresh server whose first visitor opens /history would run pages/history.py
    alone (Streamlit's own page list, no sidebar, no engine), and every later session too. The first such
    run switches that mode off and reruns, which goes through app.py (tests/test_e2e_layout.py)."""
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()


def load_context() -> AppContext:
    own_the_navigation()
    try:
        settings = app_settings()
    except ConfigError as e:
        config_error_page(e)
        raise  # unreachable (st.stop); keeps type checkers honest
    runtime, note = _runtime(settings.db_path)
    store = st.session_state.get("_ro_store")
    if store is None or store.path != settings.db_path:
        store = Store(settings.db_path, readonly=True)
        st.session_state["_ro_store"] = store
    return AppContext(settings, runtime, store, note)


def password_configured() -> bool:
    """Whether an APP_PASSWORD is set anywhere (environment, .env, secrets.toml), read without Settings (which
    may be what failed to load)."""
    import os

    if os.environ.get("APP_PASSWORD", "").strip() or secret_overrides().get("app_password", "").strip():
        return True
    try:
        from dotenv import dotenv_values

        return bool((dotenv_values(".env").get("APP_PASSWORD") or "").strip())
    except Exception:  # noqa: BLE001 - an unreadable .env: assume a password, show less
        return True


def _refused() -> None:
    """The only page while the configuration is refused (never run: the error page stops first)."""


def config_error_page(e: ConfigError) -> None:
    """Refused settings: the details (variables and values, secrets already masked) go to the server log, and to
    the page only where nobody has to sign in (loopback and no APP_PASSWORD) or this session already has.
    Anyone else sees that the app cannot start, nothing of how it is configured."""
    from ui.auth import bound_to_loopback

    text = str(e)
    logged = st.session_state.setdefault("_logged_config_errors", set())
    if text not in logged:  # once per browser session (not once per process): each visit that fails says why
        logged.add(text)
        log.error("configuration error: %s", text)
    # this run stops before app.py's st.navigation: Streamlit would list the pages/ folder by file name instead
    st.navigation([st.Page(_refused, title="Configuration error", icon=":material/error:", default=True)],
                  position="hidden")
    details = st.session_state.get("_authenticated") or (bound_to_loopback() and not password_configured())
    if details:
        st.error(f"Configuration error: {text}")
        st.caption("Fix the value in your environment or .env file and reload the page.")
    else:
        st.error("The app cannot start: its configuration was refused. The server's log says which setting.")
    st.stop()


def who() -> str:
    """A short, non-secret name for the browser session that sent a command (for the audit table)."""
    try:
        from streamlit.runtime.scriptrunner import get_script_run_ctx

        ctx = get_script_run_ctx()
        return f"ui:{ctx.session_id[:8]}" if ctx else "ui"
    except Exception:
        return "ui"


def send_command(ctx: AppContext, kind: str, payload: dict) -> dict:
    """Persist a command; the engine applies it now (same process) or on its next tick (other process)."""
    if ctx.runtime is not None:
        return ctx.runtime.send_command(kind, payload, who=who())
    writer = Store(ctx.settings.db_path)
    try:
        cid = writer.send_command(kind, payload, who=who(), now=ctx.now())
    finally:
        writer.close()
    return {"id": cid, "status": "new", "result": "queued for the engine's next tick"}

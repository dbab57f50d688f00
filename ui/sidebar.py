"""The sidebar on every page: mode, AUTO_MODE, Pause, live sliders, profile, engine heartbeat.

The engine is the source of truth: every run copies its live parameters into
the widgets' state, and a change is sent as a command (persisted, audited,
applied within one tick).
"""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import streamlit as st

from core import views
from core.bounds import BY_PARAM
from core.clock import NY
from core.config import ConfigError, LiveParams, insecure_network_warnings, validate_param_changes
from core.secrets import mask_secrets, redact_url
from ui import answers, bounded
from ui.state import AppContext, send_command

SCOPE = "sidebar"  # the answer to the last slider, switch or profile change (ui.answers)
# the live sliders: each one's range, step and format come from core/bounds.py, as the engine's check does
SLIDERS = (("cutoff_delta", "Added to every segment cutoff: higher = fewer, stronger signals."),
           ("cooldown_s", "Seconds after an actionable signal before the same ticker may signal again."))


def _changed(ctx: AppContext, key: str, name: str, source: str = "command") -> None:
    value = st.session_state[key]
    if _already_live(ctx, name, value):
        # A callback can fire for a value the engine already has: a browser rerun that resends every widget of
        # the sidebar at once (seen with keyboard steps on a slider), or a stale tab. Sent again it would be
        # audited as a change, and the profile box would re-apply its profile, resetting the cutoff and cooldown.
        return
    # ``source`` goes to the audit; a slider's arrow-key steps are folded into one change by the engine
    _answer(name, value, send_command(ctx, "set_params", {name: value, "_source": source}))


def _answer(name: str, value: object, res: dict) -> None:
    """The engine's answer to a change, kept in the sidebar until dismissed or replaced (ui.answers)."""
    if res.get("status") == "failed":
        answers.say(SCOPE, f"{name} not changed", [("error", str(res.get("result")))])
    elif res.get("status") == "new":
        answers.say(SCOPE, f"{name} → {value}", [("info", "queued for the engine's next tick")])
    else:
        answers.dismiss(SCOPE)  # applied: the control shows it; an older refusal no longer holds


def _already_live(ctx: AppContext, name: str, value: object) -> bool:
    live = views.live_params(ctx.store)
    try:
        return name in live and validate_param_changes({name: value})[name] == live[name]
    except ConfigError:  # a bad value goes to the engine, which refuses it with its reason
        return False


def render_sidebar(ctx: AppContext) -> None:
    params = views.live_params(ctx.store) or {}
    # copy the engine's values into the widgets (another tab or a restart may have changed them)
    st.session_state["w_auto_mode"] = bool(params.get("auto_mode", ctx.settings.auto_mode))
    st.session_state["w_paused"] = bool(params.get("paused", False))
    st.session_state["w_profile"] = params.get("profile", "default")
    # the value the engine uses, as it is: never clamped to the slider (CUTOFF_DELTA=0.3 once showed +0.10)
    configured = LiveParams.from_settings(ctx.settings)
    shown = {name: params.get(name, getattr(configured, name)) for name, _ in SLIDERS}

    sb = st.sidebar
    sb.markdown("### Trading engine")
    if ctx.settings.broker == "sim":
        mode = "Simulated market + broker"
    else:
        mode = "Alpaca paper" if ctx.settings.alpaca_paper else "Alpaca LIVE"
    sb.selectbox("Mode", [mode], key="w_mode", disabled=True,
                 help="Set BROKER=alpaca (and the two keys) in .env or .streamlit/secrets.toml and restart.")
    if ctx.settings.broker == "alpaca" and not ctx.settings.alpaca_paper:
        st.error("LIVE TRADING — orders use real money.", icon=":material/warning:")
    sb.toggle("AUTO_MODE (submit without approval)", key="w_auto_mode", on_change=_changed,
              args=(ctx, "w_auto_mode", "auto_mode", "switch"))
    sb.toggle("Pause trading", key="w_paused", on_change=_changed, args=(ctx, "w_paused", "paused", "switch"),
              help="No new entries or basket trades while paused; exits and stops still run.")
    for name, help_text in SLIDERS:
        key = f"w_{name}"
        bounded.state_slider(sb, BY_PARAM[name], shown[name], key=key, on_change=_changed,
                             args=(ctx, key, name, "slider"), help=help_text)
    env_notices(ctx)  # under the sliders it is about
    sb.selectbox("Profile", ["default", "relaxed"], key="w_profile", on_change=_changed,
                 args=(ctx, "w_profile", "profile", "profile"))
    answers.show(SCOPE, sb)  # a refused value stays until dismissed or replaced
    if ctx.note:
        sb.warning(ctx.note)
    for problem in insecure_network_warnings(ctx.settings):  # ALLOW_INSECURE_NETWORK=1 let it through
        sb.warning(f"Insecure network link: {problem}", icon=":material/lock_open:")
    with sb:
        heartbeat(ctx)


def env_notices(ctx: AppContext) -> None:
    """A live parameter that differs from .env (or the environment): the stored value runs (README, Configuration),
    so say where it came from and offer the configured one, sent as an audited command like a slider's."""
    for d in views.env_differences(ctx.store, ctx.settings):
        st.sidebar.warning(f"**{d.setting}** {d.text}", icon=":material/difference:")
        label = "Use .env value" if d.origin == ".env" else "Use the environment's value"
        st.sidebar.button(label, key=f"w_env_{d.param}", on_click=_use_configured, args=(ctx, d.param, d.configured),
                          help=f"Sets {d.param} to {d.show(d.configured)} in the running engine (recorded in the audit "
                               f"as 'env').")


def _use_configured(ctx: AppContext, name: str, value: object) -> None:
    _answer(name, value, send_command(ctx, "set_params", {name: value, "_source": "env"}))


def render_pending_approvals(ctx: AppContext, *, on_approvals: bool = False) -> None:
    """The pending count and the new-intent toasts, refreshed every UI_REFRESH_S on every page. Called by app.py
    once ``st.navigation`` knows its pages (the count links to Approvals; ``on_approvals``: that page is open, its
    cards say it all, so no toast)."""
    st.html(TOAST_CSS)
    st.fragment(pending_approvals, run_every=ctx.settings.ui_refresh_s)(ctx, on_approvals)


# Streamlit puts toasts at the top right, over the gauges, the KPI tiles and the intent cards: bottom right, narrow
TOAST_CSS = """<style>
[data-testid="stToastContainer"] { top: auto !important; bottom: 0.75rem; right: 0.75rem; width: 21rem;
  max-width: 30vw; }
</style>"""
TOAST_SECONDS = 6  # long enough to read one line, short enough not to outlive a quick approval


def pending_approvals(ctx: AppContext, on_approvals: bool = False) -> None:
    """How many intents wait (a link to Approvals) and a toast for each new one; keeps the navigation's
    "Approvals (n)" current by rerunning the app when the count changes."""
    pending = views.pending_intents(ctx.store, ctx.now(), ctx.wall_now(), ctx.speed())
    n = len(pending)
    if st.session_state.get("_nav_pending", n) != n:  # app.py wrote the count the navigation shows
        st.session_state["_nav_pending"] = n
        st.rerun(scope="app")  # the whole app runs again (the toast comes with that run)
    st.page_link("pages/approvals.py", label=f"Approvals waiting: {n}" if n else "No approvals waiting",
                 icon=":material/notifications_active:" if n else ":material/task_alt:")
    announce_new_intents(pending, quiet=on_approvals)


def announce_new_intents(pending: pd.DataFrame, *, quiet: bool = False) -> list[str]:
    """One toast for the intents that appeared since this browser session last looked; returns their ids.

    Once per intent per session: every intent seen is remembered for the session (a decided intent never toasts;
    one waiting when the session starts, a page load, is in the count and on Approvals already, so it does not
    toast either). ``quiet``: remember without a toast (the Approvals page shows the cards themselves)."""
    ids = list(pending["id"]) if not pending.empty else []
    seen: set[str] | None = st.session_state.get("_announced_intents")
    if seen is None:  # the session's first look: what already waits is not news
        st.session_state["_announced_intents"] = set(ids)
        return []
    new = [r for r in pending.itertuples() if r.id not in seen] if ids else []
    seen.update(ids)
    if not new or quiet:
        return [r.id for r in new]
    if len(new) == 1:
        r = new[0]
        text = (f"New intent **{r.side.upper()} {r.qty:g} {r.symbol}** ({r.kind}): approve within "
                f"{views.countdown_text(r.expires_in_s)}")
    else:
        text = f"**{len(new)} new intents** wait: " + ", ".join(f"{r.side.upper()} {r.symbol}" for r in new[:6]) \
            + ("…" if len(new) > 6 else "")
    st.toast(text, icon=":material/notifications_active:", duration=TOAST_SECONDS)
    return [r.id for r in new]


@st.fragment(run_every=2)
def heartbeat(ctx: AppContext) -> None:
    st.markdown("##### Engine heartbeat")
    hb = views.heartbeat(ctx.store)
    if ctx.runtime is not None:
        status = ctx.runtime.status()
        market = datetime.fromisoformat(status["market_time"]).astimezone(NY)
        running = [n for n, j in status["jobs"].items() if j["runs"] > 0]
        st.caption(f"Connected: {ctx.runtime.broker_label()}")
        st.caption(f"Market time {market:%a %Y-%m-%d %H:%M:%S} ET"
                   f"{' (open)' if status['market_open'] else ' (closed)'} · speed ×{status['speed']:g}")
        st.caption(f"Jobs: {', '.join(running) or 'starting'} · scheduler "
                   f"{'running' if status['running'] else 'stopped'} · errors {status['errors']}")
        tick = status["jobs"].get("tick", {})
        if tick.get("last_run"):
            age = (datetime.now(UTC) - datetime.fromisoformat(tick["last_run"])).total_seconds()
            st.caption(f"Last tick {age:.0f}s ago ({tick.get('last_duration_ms')} ms)")
        for name, j in status["jobs"].items():
            if j["last_error"]:
                st.caption(f":red[{name}: {j['last_error']}]")
        redis_status(status.get("redis"))
        if status.get("storage_error"):
            st.error(f"Database not writable ({status['storage_error']}): trading stopped until it is.",
                     icon=":material/database:")
    elif hb:
        st.caption(f"Last tick (market time) {hb['ts']} · engine in another process")
        redis_status(views.runtime_heartbeat(ctx.store).get("redis"))
    else:
        st.caption("No engine tick recorded yet.")


def redis_status(r: dict | None) -> None:
    """Shared backends: Redis, or the local fallback while Redis is unreachable."""
    if not r:
        return
    # the status is masked where it is made (core/services/redis_link.py); a heartbeat row written by an older
    # version may not be: mask again here
    if r["up"]:
        st.caption(f"Shared state: Redis {redact_url(str(r['url']))}")
    else:
        st.caption(f":orange[Redis unreachable: local token bucket and locks in use, retrying "
                   f"({mask_secrets(r['last_error'])})]")

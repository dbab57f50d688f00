"""Risk gauges: concurrent risk, daily loss, exposure, slots, token buckets, LLM calls; Kelly margin."""

import streamlit as st

from core import views
from ui import charts
from ui.state import load_context, send_command

ctx = load_context()
st.title("Risk gauges")


@st.fragment(run_every=ctx.settings.ui_refresh_s)
def gauges() -> None:
    g = views.risk_gauges(ctx.store, ctx.settings, ctx.now())
    s = g["summary"]
    status = s.get("risk_status", "safe")
    colour = {"safe": "green", "caution": "orange", "blocked": "red"}.get(status, "gray")
    st.markdown(f"Risk status: :{colour}[**{status.upper()}**] · equity ${s.get('equity', 0):,.2f}")
    row = st.columns(4)
    row[0].plotly_chart(charts.gauge("Concurrent risk", s["current_risk_pct"], s["max_risk_pct"]), theme=None,
                        key="g_risk")
    row[1].plotly_chart(charts.gauge("Daily loss", s["daily_loss_pct"], s["daily_loss_limit"]), theme=None,
                        key="g_loss")
    row[2].plotly_chart(charts.gauge("Exposure incl. pending", s["exposure_pct"], s["max_exposure"], axis_max=1.0),
                        theme=None, key="g_exposure")
    row[3].plotly_chart(charts.gauge("Positions", s["open_positions"], s["max_positions"], unit="", scale=1.0),
                        theme=None, key="g_slots")
    row = st.columns(5)
    for i, (tier, t) in enumerate(g["tokens"].items()):
        used = t["capacity"] - t["left"]
        row[i].plotly_chart(charts.gauge(f"{tier} tokens / min", used, max(t["capacity"], 1), unit="",
                                         scale=1.0), theme=None, key=f"g_tokens_{tier}")
    row[3].plotly_chart(charts.gauge("LLM calls today", g["llm_calls"], max(g["llm_limit"], 1), unit="", scale=1.0),
                        theme=None, key="g_llm")
    row[4].plotly_chart(charts.gauge(f"LLM spend, month ({ctx.settings.llm_budget_currency})", g["llm_spend"],
                                     max(g["llm_budget"], 1e-9), unit="", scale=1.0), theme=None, key="g_llm_spend")
    k, m = g["kelly"], g["kpi"]
    c = st.columns(4)
    measured = bool(k["measured"])
    waiting = "n/a"  # below the sample one trade swings it wildly; the caption under the tiles says why
    c[0].metric("Kelly fraction", f"{k['kelly_fraction']:.3f}" if measured else waiting,
                help=f"W - (1 - W) / R from closed trades ({m['trades']} so far); needs wins and losses and at "
                     f"least {views.KELLY_MIN_TRADES} trades")
    c[1].metric("Kelly margin", f"{k['margin']:.1f}x" if measured else waiting,
                help="Kelly fraction / risk per trade; below 1x the edge does not cover the risk taken")
    c[2].metric("Win rate", views.percent(m["win_rate"]), help=f"{m['trades']} closed trades")
    c[3].metric("RTH signal cap", f"{g['rth_cap_used']} / {g['rth_cap']}")
    if not measured:  # under the tiles, whole: a tile's value is cut at 1280 px
        st.caption(f"Kelly fraction and margin: n/a (needs ≥ {views.KELLY_MIN_TRADES} closed trades with wins and "
                   f"losses; {m['trades']} so far).")
    if k["warning"]:
        st.warning("Kelly margin below 1x: the measured edge does not support the risk per trade.")
    st.subheader("Token usage per minute")
    st.dataframe(views.token_usage(ctx.store, 60), hide_index=True, key="token_usage")


@st.fragment(run_every=ctx.settings.ui_refresh_s)
def protections_panel() -> None:
    st.subheader("Protections")
    active, history = views.protections(ctx.store, ctx.now())
    if not active:
        st.caption("No protection active. Rules: signal quality (1 h), LLM surge / Tier-A overflow (2 h), "
                   "stop-loss guard, equity drawdown, symbol cooldown after a loss.")
    for p in active:
        c = st.columns([5, 1])
        c[0].warning(f"**{p['rule']}** fired {p['fired_ny']}: {p['why']} · active until {p['until_ny']} "
                     f"({p['minutes_left']} min left)")
        if not p["releasable"]:
            c[1].caption("lifts when the day rolls")
        elif c[1].button("Release", key=f"release_{p['id']}", help="End the cool-off and any entry pause (audited)"):
            res = send_command(ctx, "release_protection", {"id": p["id"]})
            st.toast(f"release: {res.get('result') or res.get('status')}")
    if not history.empty:
        st.dataframe(history, hide_index=True, key="protection_history")
    with st.expander("Protection rules and the least sample each needs"):
        st.caption("Below its minimum sample a condition is not judged: a rule never fires on one or two events.")
        st.dataframe(views.protection_rules(ctx.settings), hide_index=True, key="protection_rules")


@st.fragment(run_every=ctx.settings.ui_refresh_s)
def changes_panel() -> None:
    st.subheader("Changes")
    df = views.changes(ctx.store)
    if df.empty and views.refused_commands(ctx.store, 1).empty:
        st.caption("No setting has changed yet. Every change of a slider, switch or profile, a research run applied "
                   "to live, a protection and its release is listed here.")
        return
    st.caption("Newest first, New York time. A slider move counts once, from where it started to where it was "
               "let go.")
    st.dataframe(df, hide_index=True, key="changes")
    refused = views.refused_commands(ctx.store)
    if not refused.empty:
        st.markdown("**Refused commands**")
        st.caption("Commands the engine did not apply (malformed, outside a setting's range, or unknown), newest "
                   "first. Nothing else was held up by them.")
        st.dataframe(refused, hide_index=True, key="refused_commands")


gauges()
protections_panel()
changes_panel()

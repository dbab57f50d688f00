"""KPIs (rules §11): any window on demand, by tier and basket; the hourly snapshots; the paper-evaluation verdict."""

import streamlit as st

from core import views
from core.metrics import kpi
from core.research import evaluation
from ui import charts
from ui.state import load_context

ctx = load_context()
RATES = ("strong_rate", "flip_flop_rate", "stop_out_rate", "tier_a_overflow_max", "overflow_rate",
         "overflow_max_minute", "signal_mae_median", "signal_mfe_median", "max_drawdown", "win_rate")
FORMATS = {c: st.column_config.NumberColumn(format="percent") for c in RATES} | {
    "pnl_realized": st.column_config.NumberColumn("realised P&L", format="dollar")}
st.title("KPIs")

c = st.columns([2, 1, 3])
choice = c[0].selectbox("Window", views.KPI_WINDOWS, key="kpi_window")
c[1].button("Compute now", key="kpi_refresh", help="Recompute from the database (the page also does on every visit)")
start, end = views.kpi_window(choice, ctx.now())
report = kpi.kpi_report(ctx.store, ctx.settings, start, end)
k = report["all"]
c[2].caption(f"{views.ny_text(start)} → {views.ny_text(end)} New York · MAE/MFE of actionable signals over "
             f"{report['horizon_s'] // 60} min · strong = |score| ≥ cutoff + {ctx.settings.kpi_strong_margin}")
row = st.columns(5)
row[0].metric("Signals", k["generated"], help="decisions made (rate-limited attempts included, no-data skips not)")
row[1].metric("Actionable", k["actionable"], help=f"{k['suppressed']} suppressed")
row[2].metric("Strong-signal rate", views.percent(k["strong_rate"]), help=f"{k['strong']} strong")
row[3].metric("Flip-flops", k["flip_flops"], help=f"{views.percent(k['flip_flop_rate'])} of actionable signals")
row[4].metric("Direction-lock hits", k["direction_lock_hits"])
row = st.columns(5)
measured = k["signals_measured"] > 0  # a median of nothing is no figure ("–"), not "+0.00%"
row[0].metric("Signal MAE (median)", views.percent(k["signal_mae_median"] if measured else None, 2, signed=True),
              help=f"{k['signals_measured']} actionable signals with later prices")
row[1].metric("Signal MFE (median)", views.percent(k["signal_mfe_median"] if measured else None, 2, signed=True))
row[2].metric("Tier-A overflow", views.percent(k["tier_a_overflow_max"]), help="the worst minute in the window")
row[3].metric("LLM calls", k["llm_calls"], help=f"spend {k['llm_spend']:,.0f} {ctx.settings.llm_budget_currency}")
row[4].metric("Max drawdown", views.percent(k["max_drawdown"], 2), help="on account equity inside the window")
row = st.columns(5)
row[0].metric("Trades", k["trades"], help=f"win rate {views.percent(k['win_rate'])}")
row[1].metric("Realised P&L", views.money(k["pnl_realized"]), help="the P&L of the trades closed in the window")
# no closed trade: no stop-out rate ("–"), not "0 %" (which reads as "no trade was stopped out")
row[2].metric("Stop-out rate", views.percent(k["stop_out_rate"] if k["trades"] else None),
              help=f"{k['stop_outs']} of {k['trades']} closed trades")
row[3].metric("Trade MAE (median)", views.percent(k["trade_mae_median"] if k["trades"] else None, 2, signed=True))
row[4].metric("Trade MFE (median)", views.percent(k["trade_mfe_median"] if k["trades"] else None, 2, signed=True))
tables = views.kpi_tables(report)
left, right = st.columns([3, 2])
left.subheader("By tier")
left.dataframe(tables["by_tier"], hide_index=True, key="kpi_by_tier", column_config=FORMATS)
left.subheader("By basket")
left.dataframe(tables["by_basket"], hide_index=True, key="kpi_by_basket", column_config=FORMATS)
right.plotly_chart(charts.suppression_bar(tables["reasons"]), theme=None, key="kpi_reasons")

st.subheader("Hourly snapshots")
snaps = views.kpi_snapshots(ctx.store)
if snaps.empty:
    st.caption("The engine writes one snapshot per market hour; none yet.")
else:
    c = st.columns(2)
    c[0].plotly_chart(charts.kpi_lines(snaps, ["generated", "actionable", "suppressed"], "Signals per hour"),
                      theme=None, key="kpi_chart_counts")
    c[1].plotly_chart(charts.kpi_lines(snaps, ["strong_rate", "flip_flop_rate", "stop_out_rate", "tier_a_overflow_max"],
                                       "Rates per hour", percent=True), theme=None, key="kpi_chart_rates")
    shown = snaps.iloc[::-1].assign(ts=snaps["ts"].dt.strftime("%Y-%m-%d %H:%M"))
    st.dataframe(shown, hide_index=True, key="kpi_snapshots", column_config=FORMATS)

st.subheader("Paper evaluation")
ev = evaluation.paper_evaluation(ctx.store, ctx.settings, ctx.now())
if ev.verdict == evaluation.READY_LIVE:
    st.success(f"**{ev.verdict.capitalize()}**: {ev.detail}")
elif ev.verdict == evaluation.READY_DEFAULT:
    st.info(f"**{ev.verdict.capitalize()}**: {ev.detail}")
else:
    st.warning(f"**{ev.verdict.capitalize()}**")
st.caption(f"Plan: {ctx.settings.eval_relaxed_sessions} relaxed sessions, then {ctx.settings.eval_default_sessions} "
           "default ones; each session must pass the EVAL_* thresholds.")
if ev.sessions:
    st.dataframe(ev.rows(), hide_index=True, key="evaluation_sessions", column_config=FORMATS)

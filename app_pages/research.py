"""Research: replay a date range with chosen parameters, compare with the current settings, sweep a grid.

Runs use the same Engine as live trading, on a SimClock and the simulated broker, in an in-memory
database; nothing here touches the live engine. Clicking anything while a run is in progress stops
it (Streamlit ends the running script); "Cancel" is that click.
"""

from datetime import date

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core import views
from core.config import ConfigError
from core.research.replay import grid_cells, run_replay, run_sweep
from ui.state import load_context

ctx = load_context()
st.title("Research")
live = views.live_params(ctx.store)
MAX_SESSIONS = 260  # a year of sessions: a replay runs in memory and journals in batches (README, Benchmarks)
METRICS = ["total_return", "sharpe", "sortino", "max_drawdown", "win_rate", "profit_factor", "expectancy",
           "trades", "exposure", "stop_out_rate", "flip_flop_rate", "cagr"]


def overrides(cutoff_delta: float, cooldown_s: int) -> dict:
    # research runs always submit (nobody approves inside a replay)
    return {"cutoff_delta": cutoff_delta, "mixer_cooldown_s": cooldown_s, "auto_mode": True,
            "db_path": ":memory:", "seed": int(st.session_state.get("r_seed", 7))}


def replay(label: str, cutoff_delta: float, cooldown_s: int, start: date, days: int, seed: int, bar,
           decisions: str = "summary") -> dict:
    from core.config import load_settings

    settings = load_settings(**overrides(cutoff_delta, cooldown_s))

    def progress(done: int, total: int) -> None:
        bar.progress(min(1.0, done / max(total, 1)), text=f"{label}: {done}/{total} ticks")

    res = run_replay(settings, days=days, seed=seed, start=start, progress=progress, decisions=decisions)
    out = {"label": label, "stats": res.stats, "equity": views.equity_curve(res.store),
           "trades": views.trades(res.store, local_times=False)}
    res.store.close()
    return out


with st.form("research_form"):
    c = st.columns(4)
    start = c[0].date_input("First session", value=date(2025, 3, 3), key="r_start")
    days = c[1].number_input("Sessions", min_value=1, max_value=MAX_SESSIONS, value=5, step=1, key="r_days")
    seed = c[2].number_input("Synthetic market seed", min_value=0, value=7, step=1, key="r_seed")
    c[3].caption(f"Current settings: cutoff delta {live.get('cutoff_delta', 0.0):+.2f}, "
                 f"cooldown {live.get('cooldown_s', 180)} s")
    c = st.columns(2)
    delta = c[0].slider("Cutoff delta for this run", -0.10, 0.10, float(live.get("cutoff_delta", 0.0)), 0.01,
                        key="r_delta")
    cooldown = c[1].slider("Cooldown (s) for this run", 30, 600, int(live.get("cooldown_s", 180)), 10,
                           key="r_cooldown")
    full_rows = st.checkbox(
        "Store every decision row (slower)", value=False, key="r_full_decisions",
        help="By default a run counts the decisions that never passed the cutoff per ticker and minute instead of "
             "storing each one; the figures are the same. Tick this to keep one row per decision, as live trading.")
    run = st.form_submit_button("Run and compare with current settings", type="primary")

if run:
    bar = st.progress(0.0, text="starting")
    st.button("Cancel", key="r_cancel")
    decisions = "full" if full_rows else "summary"
    try:
        current = replay("current settings", float(live.get("cutoff_delta", 0.0)), int(live.get("cooldown_s", 180)),
                         start, int(days), int(seed), bar, decisions)
        chosen = replay("this run", float(delta), int(cooldown), start, int(days), int(seed), bar, decisions)
        st.session_state["r_result"] = (current, chosen)
    except (ConfigError, ValueError) as e:
        st.error(f"Cannot run: {e}")
    bar.empty()

result = st.session_state.get("r_result")
if result:
    current, chosen = result
    rows = []
    for m in METRICS:
        a, b = current["stats"]["metrics"].get(m), chosen["stats"]["metrics"].get(m)
        delta_v = (b - a) if isinstance(a, int | float) and isinstance(b, int | float) else None
        rows.append({"metric": m, "current settings": a, "this run": b, "delta": delta_v})
    st.subheader("Metrics")
    st.dataframe(pd.DataFrame(rows), hide_index=True, key="r_metrics")
    fig = go.Figure()
    for r in (current, chosen):
        if not r["equity"].empty:
            fig.add_trace(go.Scatter(x=r["equity"]["ts"], y=r["equity"]["equity"], mode="lines", name=r["label"]))
    fig.update_layout(title="Equity", height=320, margin={"l": 10, "r": 10, "t": 40, "b": 10},
                      yaxis={"automargin": True, "tickformat": ",.0f"})
    st.plotly_chart(fig, theme=None, key="r_equity")
    tr = chosen["trades"]
    st.subheader(f"Trades of this run ({len(tr)})")
    if not tr.empty:
        sc = go.Figure(go.Scatter(x=tr["mae"], y=tr["mfe"], mode="markers", text=tr["symbol"],
                                  marker={"color": ["#2e7d32" if p > 0 else "#c62828" for p in tr["pnl"]]}))
        sc.update_layout(title="MAE vs MFE per trade", xaxis_title="MAE", yaxis_title="MFE", height=320,
                         margin={"l": 10, "r": 10, "t": 40, "b": 10})
        st.plotly_chart(sc, theme=None, key="r_mae_mfe")
        st.dataframe(tr, hide_index=True, key="r_trades")
    st.download_button("Download trades (CSV)", tr.to_csv(index=False).encode(), "research_trades.csv", "text/csv",
                       key="r_dl_trades")
    st.download_button("Download metrics (CSV)", pd.DataFrame(rows).to_csv(index=False).encode(),
                       "research_metrics.csv", "text/csv", key="r_dl_metrics")

st.divider()
st.subheader("Parameter sweep")
with st.form("sweep_form"):
    c = st.columns(4)
    d_lo, d_hi = c[0].slider("Cutoff delta range", -0.10, 0.10, (-0.04, 0.04), 0.01, key="s_delta")
    d_step = c[1].number_input("Delta step", min_value=0.01, max_value=0.10, value=0.02, step=0.01, key="s_step")
    cooldowns = c[2].multiselect("Cooldowns (s)", [30, 60, 120, 180, 300, 600], default=[60, 180, 300],
                                 key="s_cooldowns")
    metric = c[3].selectbox("Heat map metric", METRICS, key="s_metric")
    s_days = st.number_input("Sessions", min_value=1, max_value=MAX_SESSIONS, value=5, step=1, key="s_days")
    workers = st.number_input("Processes", min_value=1, max_value=8, value=2, step=1, key="s_workers")
    go_sweep = st.form_submit_button("Run sweep")

if go_sweep:
    n = int(round((d_hi - d_lo) / d_step)) + 1
    grid = {"cutoff_delta": [round(d_lo + i * d_step, 4) for i in range(n)],
            "mixer_cooldown_s": sorted(int(c) for c in cooldowns) or [int(live.get("cooldown_s", 180))]}
    bar = st.progress(0.0, text=f"0/{len(grid_cells(grid))} runs")
    st.button("Cancel", key="s_cancel")
    base = {"auto_mode": True, "db_path": ":memory:", "seed": int(st.session_state.get("r_seed", 7))}
    rows = run_sweep(base, grid, days=int(s_days), seed=int(st.session_state.get("r_seed", 7)),
                     start=st.session_state.get("r_start", date(2025, 3, 3)), workers=int(workers),
                     progress=lambda d, t: bar.progress(d / t, text=f"{d}/{t} runs"))
    bar.empty()
    st.session_state["s_result"] = (grid, rows)

sweep = st.session_state.get("s_result")
if sweep:
    grid, rows = sweep
    df = pd.DataFrame(rows)
    chosen_metric = st.session_state.get("s_metric", METRICS[0])
    pivot = df.pivot(index="mixer_cooldown_s", columns="cutoff_delta", values=chosen_metric)
    hm = go.Figure(go.Heatmap(z=pivot.to_numpy(), x=[f"{v:+.2f}" for v in pivot.columns],
                              y=[str(v) for v in pivot.index], colorscale="RdYlGn", colorbar={"title": chosen_metric},
                              text=pivot.round(4).to_numpy(), texttemplate="%{text}"))
    hm.update_layout(title=f"{chosen_metric} by cutoff delta × cooldown", xaxis_title="cutoff delta",
                     yaxis_title="cooldown (s)", height=380, margin={"l": 10, "r": 10, "t": 40, "b": 10})
    st.plotly_chart(hm, theme=None, key="s_heatmap")
    st.dataframe(df, hide_index=True, key="s_table")
    st.download_button("Download sweep (CSV)", df.to_csv(index=False).encode(), "sweep.csv", "text/csv",
                       key="s_dl")

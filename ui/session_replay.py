"""Trade history's "Replay this session" (issue 28): pick a journalled live session, replay it
(core.research.session_replay), show both equity curves, the differences filterable by cause with the first divergence
highlighted, CSV and JSON downloads; each replay is saved in research_runs."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core.clock import WallClock, trading_date
from core.exports import to_csv_bytes
from core.research import session_replay as sr
from core.state.store import Store

_KEY = "session_replay_result"


def _curve(points: list[list[Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(points, columns=["ts", "equity"])
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True).dt.tz_convert("America/New_York")
    return frame


def equity_figure(result: dict[str, Any]) -> go.Figure:
    fig = go.Figure()
    for name, key in (("live", "equity_live"), ("replay", "equity_replay")):
        c = _curve(result[key])
        fig.add_trace(go.Scatter(x=c["ts"], y=c["equity"], mode="lines", name=name))
    first = result.get("first_divergence")
    if first:
        fig.add_vline(x=pd.Timestamp(first["ts"]).tz_convert("America/New_York"), line_dash="dot",
                      line_color="#d62728")
    # room for the dollar ticks and the date under the times (a 10 px margin cut both)
    fig.update_layout(height=320, margin={"l": 70, "r": 10, "t": 40, "b": 30},
                      title="Equity: live and replay (New York time)",
                      legend={"orientation": "h", "x": 1, "xanchor": "right", "y": 1.02, "yanchor": "bottom"})
    fig.update_yaxes(tickprefix="$", tickformat=",.0f", automargin=True)
    fig.update_xaxes(tickformat="%H:%M", automargin=True)  # one session: the date is the panel's
    return fig


def _ny_time(ts: pd.Series) -> pd.Series:
    return pd.to_datetime(ts, utc=True).dt.tz_convert("America/New_York").dt.strftime("%H:%M:%S")


def cause_table(result: dict[str, Any], table: pd.DataFrame) -> pd.DataFrame:
    """One row per cause found: how many differences, the first (New York time), its share of the P&L difference
    and what the cause means, in the fixed order of ``sr.CAUSES``."""
    pnl = result["summary"]["pnl_difference_by_cause"]
    rows = []
    for cause in (*sr.CAUSES, sr.UNEXPLAINED):
        mine = table[table["cause"] == cause] if not table.empty else table
        if mine.empty and cause not in pnl:
            continue
        rows.append({"cause": cause, "differences": len(mine),
                     "first (NY)": _ny_time(mine["ts"]).iloc[0] if len(mine) else "",
                     "P&L difference": pnl.get(cause, 0.0), "meaning": sr.CAUSE_WORDS[cause]})
    return pd.DataFrame(rows, columns=["cause", "differences", "first (NY)", "P&L difference", "meaning"])


def session_replay_panel(settings: Any, store: Store) -> None:
    # one keyed container: the page's other sections never shift into it (and a screenshot can take it alone)
    with st.container(key="session_replay_panel"):
        _panel(settings, store)


def _panel(settings: Any, store: Store) -> None:
    st.subheader("Replay this session")
    try:
        days = sr.live_sessions(store)
    except Exception:  # a database from before the session journal has no such table
        days = []
    if not days:
        st.caption("No live session journalled yet: the engine records one from its first tick of a trading day.")
        return
    day = st.selectbox("Live session (New York date)", days, key="session_replay_day")
    if st.button("Replay this session", key="session_replay_run"):
        with st.spinner(f"replaying {day} ..."):
            try:
                # an Alpaca session's history comes with this app's keys and cache (the journal keeps no secret)
                result = sr.replay_session(store, day, history=settings, today=trading_date(WallClock().now()))
            except sr.SessionReplayError as e:
                st.error(str(e))
                return
            writer = Store(settings.db_path)
            try:
                run_id = sr.save_session_run(writer, result, name=f"session replay {day}", created_at=WallClock().now())
            finally:
                writer.close()
        st.session_state[_KEY] = {**result.to_dict(), "run_id": run_id}
    res = st.session_state.get(_KEY)
    if not res or res["day"] != day:
        return
    s = res["summary"]
    c = st.columns(4)
    c[0].metric("Differences", f"{s['differences']:,}")
    c[1].metric("Matched rows", f"{s['matched']:,}")
    c[2].metric("P&L difference", f"{s['pnl_difference']:+,.2f}")
    same = res["live_version"] == res["replay_version"]
    c[3].metric("Trading code", "as live" if same else "changed", delta=None if same else "rule_change",
                delta_color="off", help=f"version that traded {res['live_version']}, version here "
                                        f"{res['replay_version']} (a hash of core/rules, core/engine, strategy, feed)")
    st.caption(f"Saved as research run #{res['run_id']}. Bars: {res.get('bars_source') or 'as journalled'}.")
    st.plotly_chart(equity_figure(res), theme=None, key="session_replay_equity")
    table = pd.DataFrame(res["differences"], columns=["ts", "table", "key", "symbol", "kind", "cause", "why", "live",
                                                      "replay"])
    first = res.get("first_divergence")
    if first:
        when = _ny_time(pd.Series([first["ts"]])).iloc[0]
        st.warning(f"First divergence at {when} (New York): {first['table']} {first['key']} ({first['kind']}), "
                   f"cause {first['cause']}: {first['why']}")
    else:
        st.success("Live and the replay match exactly: no difference.")
    if not table.empty:
        st.dataframe(cause_table(res, table), hide_index=True, key="session_replay_causes_table",
                     column_config={"P&L difference": st.column_config.NumberColumn(format="%+.2f"),
                                    "meaning": st.column_config.TextColumn(width="large")})
        causes = [c for c in (*sr.CAUSES, sr.UNEXPLAINED) if c in set(table["cause"])]
        chosen = st.multiselect("Cause", causes, default=causes, key="session_replay_causes",
                                help="; ".join(sr.CAUSE_WORDS[c] for c in causes if c in sr.CAUSE_WORDS))
        shown = table[table["cause"].isin(chosen)]
        # New York time first, then the cause: what a trader reads first at 1280 px; the full rows are in the CSV
        shown = shown.assign(**{"time (NY)": _ny_time(shown["ts"]), "symbol": shown["symbol"].fillna("")})[
            ["time (NY)", "cause", "table", "symbol", "kind", "why", "key", "live", "replay"]]
        key0 = (first["table"], first["key"]) if first else None

        def mark(row: pd.Series) -> list[str]:
            hit = key0 is not None and (row["table"], row["key"]) == key0
            return ["background-color: #fde2e1" if hit else ""] * len(row)

        st.dataframe(shown.style.apply(mark, axis=1), hide_index=True, key="session_replay_table",
                     column_config={"time (NY)": st.column_config.TextColumn(width="small"),
                                    "why": st.column_config.TextColumn(width="large")})
    left, right = st.columns(2)
    left.download_button("Download differences CSV", to_csv_bytes(pd.DataFrame(res["differences"])),
                         file_name=f"session-replay-{day}.csv", mime="text/csv", key="session_replay_csv")
    right.download_button("Download replay JSON", json.dumps(res, default=str, sort_keys=True),
                          file_name=f"session-replay-{day}.json", mime="application/json", key="session_replay_json")

"""One ticker's price chart: 1-minute candles with the engine's signals and fills (issue 17).

Live signals: the session so far, from the engine's ``MarketFeed`` (bars are not stored in the database, so only
the process running the engine has them; a window attached to an engine in another process draws the prices its
decisions recorded instead). Research: a saved replay's session, from its bars read again and checked against the
run's fingerprint (``core.research.run_bars``), with the run's fills.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from core import views
from core.clock import NY
from core.research import run_bars
from ui import charts
from ui.state import AppContext
from ui.text import plain


def live_price_chart(ctx: AppContext) -> None:
    symbols = list(ctx.settings.universe.all_symbols)
    c = st.columns([1, 4], vertical_alignment="bottom")
    symbol = c[0].selectbox("Ticker", symbols, key="price_symbol")
    now = ctx.now()
    start, close = views.chart_session(now)
    end = min(now, close)
    signals, fills = views.ticker_marks(ctx.store, symbol, start, end)
    day = f"{start.astimezone(NY):%a %Y-%m-%d}"
    feed = ctx.runtime.engine.feed if ctx.runtime is not None else None
    bars = views.feed_session_bars(feed, symbol, now) if feed is not None else pd.DataFrame()
    if not bars.empty:
        fig = charts.price_chart(bars, symbol, signals=signals, fills=fills, subtitle=f"{day}, session so far")
        c[1].caption(f"{len(bars)} bars from the engine's market feed in this process (bars are not stored in the "
                     f"database); {len(signals)} actionable signals, {len(fills)} fills.")
    else:
        line = views.decision_prices(ctx.store, symbol, start, end)
        fig = charts.price_chart(pd.DataFrame(), symbol, signals=signals, fills=fills, line=line,
                                 subtitle=f"{day}, session so far")
        why = ("the engine runs in another process and bars are not stored in the database"
               if feed is None else f"the engine's feed has no bar of {symbol} in this session yet")
        c[1].caption(f"No candles: {why}. The line is the prices the engine's decisions recorded "
                     f"({len(line)}); {len(signals)} actionable signals, {len(fills)} fills.")
    st.plotly_chart(fig, theme=None, key="price_chart")


@st.cache_resource(max_entries=2, show_spinner="Reading the run's bars again…")
def _run_bars(run_id: int, fingerprint: str | None, loaded_key: tuple[Any, ...] | None,
              _run: dict[str, Any], _loaded: tuple[str, pd.DataFrame] | None) -> run_bars.RunBars | str:
    # keyed by the run and its fingerprint (and the file the page holds): the check scores the run's sessions once
    from ui import research_view as rv

    try:
        return run_bars.load_run_bars(_run, loaded=_loaded, data_dir=rv.DATA_DIR)
    except run_bars.RunBarsUnavailable as e:
        return str(e)


def _page_file() -> tuple[str, pd.DataFrame] | None:
    """The bar file the Research page holds now (an upload or a file under data/), if any: its name inside data/
    (an upload's stored name, as its saved runs record it) and its bars."""
    from ui import research_view as rv

    up = st.session_state.get("r_upload")
    try:
        if up is not None:
            stored, _label, frame = rv.load_upload(up.getvalue(), up.name)
            return stored, frame
        picked = st.session_state.get("r_file")
        if picked and picked != "(none)":
            return picked, rv.load_path(picked)
    except Exception:  # a refused file is reported by the page's own form
        return None
    return None


def run_price_chart(run: dict[str, Any]) -> None:
    """A saved replay's candles of one ticker and session, with the run's fills."""
    trades = run.get("trades")
    trades = trades if isinstance(trades, pd.DataFrame) else pd.DataFrame()
    src = run.get("source") or {}
    st.markdown(f"**Prices of #{run['id']}**")
    loaded = _page_file() if src.get("kind") == "file" else None
    loaded_key = (loaded[0], len(loaded[1])) if loaded is not None else None
    got = _run_bars(int(run["id"]), src.get("fingerprint"), loaded_key, run, loaded)
    if isinstance(got, str):
        st.info(f"No price chart: {plain(got)}")
        return
    traded = list(dict.fromkeys(trades["symbol"])) if "symbol" in trades else []
    symbols = traded + [s for s in got.symbols if s not in traded]
    c = st.columns([1, 1, 3], vertical_alignment="bottom")
    symbol = c[0].selectbox("Ticker", symbols, key=f"r_price_symbol_{run['id']}",
                            help="Tickers the run traded first")
    days = run_bars.trade_days(trades, symbol) or got.sessions
    day = c[1].selectbox("Session", days, index=len(days) - 1, key=f"r_price_day_{run['id']}_{symbol}",
                         format_func=lambda d: f"{d:%a %Y-%m-%d}")
    bars = run_bars.session_candles(got.market, symbol, day)
    fills = run_bars.trade_fills(trades, symbol, day)
    how = {"synthetic": f"the synthetic market of seed {src.get('seed')} rebuilt",
           "file": f"the file {plain(src.get('label') or src.get('file'))} read again",
           "alpaca": "the local Alpaca cache"}.get(src.get("kind"), "the run's source")
    check = "they match the run's data fingerprint" if got.verified else \
        "the run has no data fingerprint, so they are not checked against it"
    c[2].caption(f"Bars from {how}; {check}. A saved run keeps its trades, not its decisions: the marks are its "
                 f"fills ({len(fills)} this session).")
    st.plotly_chart(charts.price_chart(bars, symbol, fills=fills, subtitle=f"{day:%a %Y-%m-%d}"), theme=None,
                    key=f"r_price_chart_{run['id']}")

"""Issue 17, charts that fit: long histories read in bounded pieces, market-hours axes, per-ticker candles.

Views against real SQLite files; the pages under AppTest with the real runtime (ENGINE_JOBS=0, a SimClock the test
moves); saved research runs whose bars are read again and checked against their fingerprint.
"""

from __future__ import annotations

import base64
import json
import math
import sqlite3
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import streamlit as st
from filelock import FileLock
from streamlit.testing.v1 import AppTest

from core import views
from core.clock import SimClock, session_bounds, trading_sessions
from core.config import load_settings
from core.feed import MarketFeed
from core.metrics import kpi
from core.research import record, run_bars, runs, sources
from core.research.replay import run_replay
from core.runtime import shared_runtime, stop_all
from core.state.store import Store
from core.strategy import load_strategy
from core.venues.sim.synthetic import SyntheticMarket
from ui import charts

APP = str(Path(__file__).resolve().parents[1] / "app.py")
DAY = date(2025, 3, 4)
OPEN = session_bounds(DAY)[0].astimezone(UTC)  # type: ignore[index]


# ---------------------------------------------------------------- helpers
def fill_equity(path: Path, values: list[float], *, step_s: int = 60) -> list[str]:
    """Snapshots every ``step_s`` of market time across sessions from DAY, inserted out of time order (as a
    database grown by copies can hold them); returns their ISO times in time order."""
    store = Store(path)
    store.close()
    days = trading_sessions(DAY, 400)
    per_day = int(6.5 * 3600 // step_s)
    times = []
    for i in range(len(values)):
        d, k = divmod(i, per_day)
        times.append((session_bounds(days[d])[0] + timedelta(seconds=step_s * (k + 1))).astimezone(UTC).isoformat())
    con = sqlite3.connect(path)
    order = np.random.default_rng(1).permutation(len(values))
    con.executemany("INSERT INTO equity(ts, equity, cash, exposure) VALUES (?, ?, ?, 0)",
                    [(times[i], values[i], values[i]) for i in order])
    con.commit()
    con.close()
    return times


def add_trades(path: Path, pnls: list[float]) -> None:
    con = sqlite3.connect(path)
    t0 = OPEN + timedelta(minutes=5)
    con.executemany(
        "INSERT INTO trades(symbol, kind, qty, entry_ts, entry_price, exit_ts, exit_price, pnl, ret, exit_reason,"
        " mae, mfe, fees) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
        [("NVDA", "entry", 1.0, (t0 + timedelta(minutes=i)).isoformat(), 100.0,
          (t0 + timedelta(minutes=i + 1)).isoformat(), 100.0 + p, p, p / 100, "stop_loss" if p < 0 else "take_profit",
          min(p, 0) / 100 - 0.001, max(p, 0) / 100 + 0.001, 0.0) for i, p in enumerate(pnls)])
    con.commit()
    con.close()


# ---------------------------------------------------------------- the equity curve, downsampled in SQL
@pytest.mark.parametrize("n", [50, 199, 200, 201, 1_000, 7_919])
def test_the_sampled_curve_is_bounded_and_keeps_ends_and_extremes(tmp_path, n):
    rng = np.random.default_rng(n)
    values = list(100_000 + np.cumsum(rng.normal(0, 50, n)))
    times = fill_equity(tmp_path / "e.db", values)
    store = Store(tmp_path / "e.db", readonly=True)
    got = views.equity_curve_sampled(store, max_points=200)
    store.close()
    iso = [t.isoformat() for t in got["ts"].dt.tz_convert(UTC)]
    assert iso == sorted(iso) and len(set(iso)) == len(iso)
    if n <= 200:  # a short history is drawn whole
        assert iso == [pd.Timestamp(t).isoformat() for t in times]
        return
    assert len(got) <= 200
    assert len(got) >= 150  # thinned, not emptied: about two samples per bucket
    assert iso[0] == pd.Timestamp(times[0]).isoformat() and iso[-1] == pd.Timestamp(times[-1]).isoformat()
    assert got["equity"].iloc[0] == values[0] and got["equity"].iloc[-1] == values[-1]
    assert got["equity"].min() == min(values) and got["equity"].max() == max(values)  # the dips stay drawn
    # every sample is a real snapshot at its own time
    real = dict(zip([pd.Timestamp(t).isoformat() for t in times], values, strict=True))
    assert all(real[t] == v for t, v in zip(iso, got["equity"], strict=True))


def test_the_sampled_curve_refuses_a_silly_bound(tmp_path):
    store = Store(tmp_path / "e.db")
    with pytest.raises(ValueError, match="max_points must be >= 4, got 3"):
        views.equity_curve_sampled(store, max_points=3)
    assert views.equity_curve_sampled(store).empty
    store.close()


def test_equity_chart_cuts_nights_and_weekends():
    # Friday afternoon to Monday morning: the axis must jump the weekend and the night
    ts = pd.to_datetime(["2025-03-07T20:58:00Z", "2025-03-07T20:59:00Z", "2025-03-10T13:31:00Z",
                         "2025-03-10T13:32:00Z"], utc=True)
    fig = charts.equity_line(pd.DataFrame({"ts": ts, "equity": [1.0, 2.0, 3.0, 4.0]}))
    # market hours on the axis (charts.MarketAxis): Friday 15:59 and Monday 09:31 are two minutes apart
    xs = list(fig.data[0].x)
    assert xs[2] - xs[1] == pytest.approx(2 / 60) and list(fig.layout.xaxis.ticktext)[0] == "Mar 07"
    # New York wall time on hover: the last Friday bar at 15:59, Monday's first at 09:31 (EDT from the 9th)
    assert list(fig.data[0].customdata)[1:3] == ["Fri 2025-03-07 15:59 ET", "Mon 2025-03-10 09:31 ET"]


# ---------------------------------------------------------------- the header, aggregated in SQL
@pytest.mark.parametrize("pnls", [[], [5.0, 7.5], [-3.0, -1.0], [12.0, -4.0, 0.0, 3.5, -2.25]])
def test_trade_summary_in_sql_equals_the_kpi_summary(tmp_path, pnls):
    fill_equity(tmp_path / "t.db", [100.0, 120.0, 90.0, 95.0, 130.0, 117.0])
    add_trades(tmp_path / "t.db", pnls)
    store = Store(tmp_path / "t.db", readonly=True)
    got, want = views.trade_summary(store), kpi.summary(store)
    store.close()
    assert got["trades"] == want["trades"] == len(pnls)
    assert got["pnl_realized"] == pytest.approx(want["pnl_realized"])
    if not pnls:  # no trade: no figure (None, shown "–"), never 0 %
        assert got["win_rate"] is None is want["win_rate"] and got["profit_factor"] is None is want["profit_factor"]
    else:
        assert got["win_rate"] == pytest.approx(want["win_rate"])
        assert got["profit_factor"] == want["profit_factor"] or got["profit_factor"] == pytest.approx(
            want["profit_factor"])
    assert got["max_drawdown"] == pytest.approx(want["max_drawdown"]) == pytest.approx(0.25)  # 120 -> 90


@pytest.mark.parametrize("value, shown", [
    (0.0, "$0.00"), (512.3, "$512.30"), (-999.99, "-$999.99"), (999.995, "$1.00k"), (1671.23, "$1.67k"),
    (-1671.23, "-$1.67k"), (99_949.0, "$99.9k"), (999_400.0, "$999k"), (999_950.0, "$1.00M"),
    (12_400_000.0, "$12.4M"), (float("nan"), "–")])
def test_money_short_fits_a_metric_tile(value, shown):
    assert views.money_short(value) == shown
    assert len(shown) <= 8


# ---------------------------------------------------------------- paged tables
def test_pages_are_limit_offset_slices_newest_first(tmp_path):
    Store(tmp_path / "p.db").close()
    add_trades(tmp_path / "p.db", [float(i) for i in range(1, 1_201)])
    store = Store(tmp_path / "p.db", readonly=True)
    pages = [views.trades_page(store, p, 500) for p in (1, 2, 3)]
    assert [len(p) for p in pages] == [500, 500, 200]
    ids = [i for p in pages for i in p["id"]]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 1_200  # newest first, every trade once
    assert views.trades_page(store, 4, 500).empty
    assert views.page_count(views.row_count(store, "trades"), 500) == 3
    assert (views.page_count(0), views.page_count(500, 500), views.page_count(501, 500)) == (1, 1, 2)
    with pytest.raises(ValueError, match="page 0 of size 500"):
        views.trades_page(store, 0, 500)
    with pytest.raises(ValueError, match="unknown table 'signals'"):
        views.row_count(store, "signals")
    store.close()


# ---------------------------------------------------------------- Trade history under AppTest
@pytest.fixture
def long_history(tmp_path, monkeypatch):
    """A database with more trades than a page and more snapshots than a chart draws; the app on it."""
    db = tmp_path / "long.db"
    rng = np.random.default_rng(3)
    values = list(100_000 + np.cumsum(rng.normal(0, 30, 12_000)))
    fill_equity(db, values)
    add_trades(db, [float(x) for x in rng.normal(1.0, 20.0, 1_234)])
    monkeypatch.setenv("DB_PATH", str(db))
    monkeypatch.setenv("ENGINE_JOBS", "0")
    monkeypatch.setenv("SIM_START", "2025-03-04")
    st.cache_resource.clear()
    stop_all()
    yield db, values
    st.cache_resource.clear()
    stop_all()


def chart(at: AppTest, title_word: str) -> dict:
    for c in at.get("plotly_chart"):
        spec = json.loads(c.proto.spec)
        if title_word in ((spec["layout"].get("title") or {}).get("text") or ""):
            return spec
    raise AssertionError(f"no chart titled with {title_word!r}")


def arr(v: object) -> list:
    """A plotly array as a list: plain JSON, or the typed form (dtype + base64 bytes) plotly 6 writes."""
    if isinstance(v, dict) and "bdata" in v:
        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"])).tolist()
    return list(v)  # type: ignore[call-overload]


def trades_table(at: AppTest) -> pd.DataFrame:
    return next(d.value for d in at.dataframe if {"pnl", "mae", "mfe"} <= set(d.value.columns))


def test_trade_history_pages_its_trades_and_thins_its_curve(long_history):
    db, values = long_history
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page("pages/history.py").run()
    assert not at.exception, at.exception
    first = trades_table(at)
    assert len(first) == views.PAGE_ROWS and first["id"].max() == 1_234
    assert next(m.value for m in at.metric if m.label == "Closed trades") == "1,234"
    store = Store(db, readonly=True)
    pnl = views.trade_summary(store)["pnl_realized"]
    store.close()
    shown = next(m for m in at.metric if m.label == "Realised P&L")
    assert shown.value == views.money_short(pnl) and len(shown.value) <= 8
    eq = chart(at, "Equity")
    assert len(eq["data"][0]["x"]) <= views.MAX_CURVE_POINTS < len(values)
    y = arr(eq["data"][0]["y"])
    assert y[0] == values[0] and y[-1] == values[-1] and min(y) == min(values)
    assert eq["layout"]["xaxis"]["tickmode"] == "array"  # the market-hours axis (charts.MarketAxis)
    mae = chart(at, "MAE vs MFE")
    assert sum(len(arr(t["x"])) for t in mae["data"]) == views.PAGE_ROWS
    assert mae["layout"]["yaxis"]["automargin"] and mae["layout"]["yaxis"]["tickformat"] == ".1%"
    # the last page holds the oldest trades
    at.number_input(key="trades_page").set_value(3).run()
    last = trades_table(at)
    assert len(last) == 1_234 - 2 * views.PAGE_ROWS and last["id"].min() == 1


# ---------------------------------------------------------------- the live price chart
def test_live_chart_draws_the_feeds_closed_bars_with_signals_and_fills(tmp_path, monkeypatch):
    db = tmp_path / "live.db"
    monkeypatch.setenv("DB_PATH", str(db))
    monkeypatch.setenv("ENGINE_JOBS", "0")
    monkeypatch.setenv("SIM_START", DAY.isoformat())
    monkeypatch.setenv("AUTO_MODE", "1")
    monkeypatch.setenv("STRATEGY", "tests.fakes.strategies:BullishNvda")
    st.cache_resource.clear()
    stop_all()
    try:
        rt = shared_runtime(load_settings())
        rt.clock = clock = SimClock(OPEN + timedelta(minutes=1))
        now = clock.now()
        end = OPEN + timedelta(minutes=47, seconds=20)
        while now < end:
            now = min(end, now + timedelta(seconds=30))
            clock.set(now)
            rt.run_tick()
        at = AppTest.from_file(APP, default_timeout=120)
        at.run()
        assert not at.exception, at.exception
        at.selectbox(key="price_symbol").set_value("NVDA").run()
        spec = chart(at, "NVDA 1-minute bars")
        candles = next(t for t in spec["data"] if t["type"] == "candlestick")
        # every bar whose minute ended by 10:17:20 ET (09:30 … 10:16), none still forming
        assert len(candles["x"]) == 47
        assert candles["x"][0].startswith("2025-03-04T09:30") and candles["x"][-1].startswith("2025-03-04T10:16")
        store = rt.store
        n_sig = store.scalar("SELECT COUNT(*) FROM signals WHERE symbol='NVDA' AND decision='actionable'")
        n_fill = store.scalar("SELECT COUNT(*) FROM fills WHERE symbol='NVDA'")
        assert n_sig >= 1 and n_fill >= 1
        marks = {t["name"]: len(t["x"]) for t in spec["data"] if t["type"] == "scatter"}
        assert marks.get("bullish signal", 0) == n_sig and "bearish signal" not in marks
        assert marks.get("buy fill", 0) + marks.get("sell fill", 0) == n_fill
        buy = next(t for t in spec["data"] if t.get("name") == "buy fill")
        first_fill = store.one("SELECT price FROM fills WHERE symbol='NVDA' ORDER BY ts")
        assert arr(buy["y"])[0] == pytest.approx(first_fill["price"])
        # a bullish mark sits under its candle
        sig = next(t for t in spec["data"] if t.get("name") == "bullish signal")
        lows = dict(zip(candles["x"], arr(candles["low"]), strict=True))
        assert all(y < lows[x] for x, y in zip(sig["x"], arr(sig["y"]), strict=True))
        assert any(b.get("pattern") == "hour" for b in spec["layout"]["xaxis"]["rangebreaks"])

        # a window whose engine runs in another process (its lock held elsewhere): no feed here, so the prices
        # the decisions recorded are drawn, with the same marks
        prices = store.scalar("SELECT COUNT(*) FROM signals WHERE symbol='NVDA' AND price IS NOT NULL")
        st.cache_resource.clear()
        stop_all()
        with FileLock(str(db.resolve()) + ".lock", timeout=0):
            viewer = AppTest.from_file(APP, default_timeout=120)
            viewer.run()
            assert not viewer.exception, viewer.exception
            viewer.selectbox(key="price_symbol").set_value("NVDA").run()
            spec = chart(viewer, "NVDA 1-minute bars")
            assert not [t for t in spec["data"] if t["type"] == "candlestick"]
            line = next(t for t in spec["data"] if t.get("name") == "NVDA (decision prices)")
            assert len(arr(line["x"])) == prices > 0
            marks = {t["name"]: len(arr(t["x"])) for t in spec["data"] if t["name"].endswith(("signal", "fill"))}
            assert marks.get("bullish signal", 0) == n_sig
            assert any("engine runs in another process" in c.value for c in viewer.caption)
    finally:
        st.cache_resource.clear()
        stop_all()


def test_feed_bars_are_the_session_so_far_and_never_a_forming_bar():
    s = load_settings()
    feed = MarketFeed(SyntheticMarket(7, s.universe, anchor=DAY - timedelta(days=1)), load_strategy(s.strategy),
                      s.universe.all_symbols)
    now = OPEN + timedelta(minutes=10, seconds=59)
    feed.ensure(now)
    bars = views.feed_session_bars(feed, "AAPL", now)
    assert len(bars) == 10  # 09:30 … 09:39 have ended; 09:40 is forming
    assert bars["ts"].iloc[0] == pd.Timestamp(OPEN) and bars["ts"].iloc[-1] == pd.Timestamp(OPEN + timedelta(minutes=9))
    j = feed.col["AAPL"]
    i0 = int(np.searchsorted(feed.ts, int(OPEN.timestamp())))
    assert list(bars["close"]) == list(feed.close[i0:i0 + 10, j])
    assert len(views.feed_session_bars(feed, "AAPL", now + timedelta(seconds=1))) == 11
    assert views.feed_session_bars(feed, "NOPE", now).empty
    # before the open: the session before (the chart never shows an empty morning)
    assert views.chart_session(OPEN - timedelta(hours=2))[0] == session_bounds(DAY - timedelta(days=1))[0]


# ---------------------------------------------------------------- a saved run's bars, read again
def saved_synthetic_run(tmp_path: Path, seed: int = 5) -> dict:
    s = load_settings(auto_mode=True, db_path=":memory:")
    days = trading_sessions(date(2025, 3, 3), 2)
    res = run_replay(s, start=days[0], end=days[-1], seed=seed)
    rec = record.replay_record(res, s, sources.DataSource("synthetic", seed=seed), {"cutoff_delta": 0.0}, days)
    res.store.close()
    store = Store(tmp_path / "runs.db")
    run_id = record.save_replay(store, "x", rec, created_at=datetime(2025, 3, 5, tzinfo=UTC))
    run = runs.load_run(store, run_id)
    store.close()
    return run


def test_a_synthetic_runs_bars_are_rebuilt_and_match_its_trades(tmp_path):
    run = saved_synthetic_run(tmp_path)
    got = run_bars.load_run_bars(run)
    assert got.verified
    trades = run["trades"]
    assert not trades.empty
    t = trades.iloc[-1]
    day = pd.Timestamp(t["entry_ts"]).tz_convert("America/New_York").date()
    bars = run_bars.session_candles(got.market, t["symbol"], day)
    assert len(bars) == 390  # a whole session of minutes
    fills = run_bars.trade_fills(trades, t["symbol"], day)
    entry = fills[(fills["side"] == "buy") & (fills["ts"] == pd.Timestamp(t["entry_ts"]))]
    assert entry["price"].iloc[0] == pytest.approx(t["entry_price"])
    # the engine fills at a bar's open (plus slippage): every fill price lies in its bar's range, near it
    by_min = bars.set_index("ts")
    for f in fills.itertuples():
        bar = by_min.loc[f.ts.floor("min")]
        assert bar["low"] * 0.99 <= f.price <= bar["high"] * 1.01


def test_a_run_whose_source_changed_gets_no_chart(tmp_path):
    run = saved_synthetic_run(tmp_path)
    other = {**run, "source": {**run["source"], "seed": 6}}
    with pytest.raises(run_bars.RunBarsUnavailable, match="are not the ones run"):
        run_bars.load_run_bars(other)
    unverified = {**run, "source": {k: v for k, v in run["source"].items() if k != "fingerprint"}}
    assert run_bars.load_run_bars(unverified).verified is False
    gone = {**run, "source": {"kind": "file", "file": str(tmp_path / "gone.csv"), "first": "2025-03-03",
                              "last": "2025-03-04"}}
    with pytest.raises(run_bars.RunBarsUnavailable, match="gone.csv"):
        run_bars.load_run_bars(gone)
    alp = {**run, "source": {"kind": "alpaca", "feed": "iex", "first": "2025-03-03", "last": "2025-03-04"}}
    with pytest.raises(run_bars.RunBarsUnavailable, match="lacks 26 symbol-days"):
        run_bars.load_run_bars(alp)


def test_the_research_page_draws_the_opened_runs_candles(tmp_path, monkeypatch):
    monkeypatch.setenv("DB_PATH", str(tmp_path / "r.db"))
    monkeypatch.setenv("ENGINE_JOBS", "0")
    st.cache_resource.clear()
    stop_all()
    try:
        at = AppTest.from_file(APP, default_timeout=240)
        at.run()
        at.switch_page("pages/research.py").run()
        at.number_input(key="r_seed").set_value(5)
        at.date_input(key="r_start").set_value(date(2025, 3, 3))
        at.date_input(key="r_end").set_value(date(2025, 3, 3))
        next(b for b in at.button if b.label == "Run replay").click().run()
        assert not at.exception, at.exception
        spec = chart(at, "1-minute bars")
        candles = next(t for t in spec["data"] if t["type"] == "candlestick")
        assert len(candles["x"]) == 390
        store = Store(tmp_path / "r.db", readonly=True)
        run = runs.load_run(store, int(runs.list_runs(store)["id"].max()))
        store.close()
        symbol = spec["layout"]["title"]["text"].split()[0]
        fills = run_bars.trade_fills(run["trades"], symbol, date(2025, 3, 3))
        assert not fills.empty
        shown = sum(len(t["x"]) for t in spec["data"] if t.get("name") in ("buy fill", "sell fill"))
        assert shown == len(fills)
        assert any("match the run's data fingerprint" in c.value for c in at.caption)
    finally:
        st.cache_resource.clear()
        stop_all()


def test_no_point_is_lost_by_the_summary_when_every_trade_is_a_win(tmp_path):
    Store(tmp_path / "w.db").close()
    add_trades(tmp_path / "w.db", [1.0, 2.0])
    store = Store(tmp_path / "w.db", readonly=True)
    assert math.isinf(views.trade_summary(store)["profit_factor"])
    store.close()


@pytest.mark.parametrize("as_text", [False, True])
def test_sweep_heat_map_keeps_the_grids_order_and_values(as_text):
    # cells met in no particular order; a sweep saved from the command line keeps its list values as text
    rows = [{"cutoff_delta": d, "mixer_cooldown_s": str(c) if as_text else c, "sharpe": d * 10 + c / 1000}
            for c in (300, 60, 180) for d in (0.02, -0.04, 0.0)]
    pivot = pd.DataFrame(rows).pivot(index="mixer_cooldown_s", columns="cutoff_delta", values="sharpe")
    fig = charts.sweep_heatmap(pivot, "sharpe")
    # rows and columns at positions 0..n-1, labelled in the grid's numeric order (text categories would be sorted
    # as text by the browser: "180" < "300" < "60"), the smallest cooldown on top
    assert tuple(fig.data[0].y) == (0, 1, 2) and tuple(fig.layout.yaxis.ticktext) == ("60", "180", "300")
    assert tuple(fig.layout.yaxis.tickvals) == (0, 1, 2) and fig.layout.yaxis.autorange == "reversed"
    assert tuple(fig.layout.xaxis.ticktext) == ("-0.04", "+0.00", "+0.02") and tuple(fig.data[0].x) == (0, 1, 2)
    z = fig.data[0].z
    assert z[0][0] == pytest.approx(-0.04 * 10 + 0.06) and z[2][2] == pytest.approx(0.02 * 10 + 0.3)


def test_no_losing_trade_and_no_trade_read_as_dashes_on_the_pages(tmp_path, monkeypatch):
    """Issue 27: profit factor "∞" with no losing trade (the README says "–"), "Stop-out rate 0%" with no trade."""
    db = tmp_path / "wins.db"
    fill_equity(db, [100_000.0, 100_001.0, 100_003.0])
    add_trades(db, [1.0, 2.0])  # two wins, no loss
    monkeypatch.setenv("DB_PATH", str(db))
    monkeypatch.setenv("ENGINE_JOBS", "0")
    monkeypatch.setenv("SIM_START", "2025-03-10")  # the KPI window (the last hour) holds no trade
    st.cache_resource.clear()
    stop_all()
    try:
        at = AppTest.from_file(APP, default_timeout=120)
        at.run()
        at.switch_page("pages/history.py").run()
        assert not at.exception, at.exception
        assert next(m.value for m in at.metric if m.label == "Profit factor") == "–"
        at.switch_page("pages/kpis.py").run()
        assert not at.exception, at.exception
        shown = {m.label: m.value for m in at.metric}
        assert shown["Trades"] == "0" and shown["Stop-out rate"] == "–"
        assert shown["Trade MAE (median)"] == shown["Trade MFE (median)"] == "–"
    finally:
        st.cache_resource.clear()
        stop_all()

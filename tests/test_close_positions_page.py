"""The Trade history page's positions block under AppTest: the table, Close per position and Flatten all, each
behind its confirmation, sent as commands the running engine applies (one runtime, a SimClock the test moves)."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from core import views
from core.clock import UTC, SimClock, session_bounds
from core.config import load_settings
from core.engine.intents import new_intent, save_intent, submit_intent
from core.runtime import Runtime, shared_runtime, stop_all

APP = str(Path(__file__).resolve().parents[1] / "app.py")
DAY = date(2025, 3, 4)
OPEN = session_bounds(DAY)[0].astimezone(UTC)


def drive(rt: Runtime, minutes: float) -> None:
    clock = rt.clock
    assert isinstance(clock, SimClock)
    end = clock.now() + timedelta(minutes=minutes)
    while clock.now() < end:
        clock.set(min(end, clock.now() + timedelta(seconds=30)))
        rt.run_tick()


def enter(rt: Runtime, symbol: str, qty: float) -> None:
    now = rt.clock.now()
    px = rt.engine.feed.price(symbol, now)
    intent = new_intent("entry", symbol, "buy", qty, px, now, 600, reason="test entry", source="test",
                        stop_price=round(px * 0.985, 2), take_profit_price=round(px * 1.03, 2))
    with rt.store.transaction():
        save_intent(rt.store, intent, "pending")
    assert submit_intent(rt.store, rt.engine.broker, intent, now) is not None


@pytest.fixture
def rt(tmp_path, monkeypatch):
    """The app's runtime holding AAPL x10 and NVDA x5 (bracket legs at -1.5 % / +3 %), in manual mode."""
    for k, v in {"DB_PATH": str(tmp_path / "app.db"), "ENGINE_JOBS": "0", "SEED": "11",
                 "SIM_START": DAY.isoformat()}.items():
        monkeypatch.setenv(k, v)
    st.cache_resource.clear()
    stop_all()
    runtime = shared_runtime(load_settings())
    runtime.clock = SimClock(OPEN + timedelta(minutes=40))
    runtime.run_tick()
    enter(runtime, "AAPL", 10)
    enter(runtime, "NVDA", 5)
    drive(runtime, 2)
    assert {r["symbol"] for r in runtime.store.query("SELECT symbol FROM positions")} >= {"AAPL", "NVDA"}
    yield runtime
    st.cache_resource.clear()
    stop_all()


def history_page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    at.switch_page("pages/history.py").run()
    assert not at.exception, at.exception
    return at


def closing_sells(rt: Runtime, symbol: str) -> int:
    return rt.store.scalar("SELECT COUNT(*) FROM sim_orders WHERE symbol=? AND side='sell' AND parent_id IS NULL",
                           (symbol,))


def messages(at: AppTest) -> list[str]:
    return [m.value for m in (*at.success, *at.warning, *at.error, *at.info)]


def test_the_table_shows_the_views_figures(rt):
    at = history_page()
    expected = views.open_positions(rt.store, rt.clock.now())
    shown = next(d.value for d in at.dataframe if {"unrealized_pnl", "to_stop_pct"} <= set(d.value.columns))
    assert list(shown["symbol"]) == list(expected["symbol"])
    for col in ("qty", "avg_entry", "last_price", "market_value", "unrealized_pnl", "unrealized_pct", "to_stop_pct",
                "to_take_profit_pct", "age"):
        assert list(shown[col]) == list(expected[col]), col
    aapl = expected.set_index("symbol").loc["AAPL"]
    fill = rt.store.scalar("SELECT price FROM fills WHERE symbol='AAPL'")
    assert aapl["avg_entry"] == fill and aapl["unrealized_pnl"] == pytest.approx((aapl["last_price"] - fill) * 10)
    assert {b.key for b in at.button} >= {"close_AAPL", "close_NVDA", "flatten_all"}


def test_close_needs_the_confirmation_then_sends_one_order_even_from_two_tabs(rt):
    tab1, tab2 = history_page(), history_page()
    tab1.button(key="close_AAPL").click().run()
    assert tab1.checkbox(key="confirm_close_AAPL").value is False
    go = tab1.button(key="confirm_go")
    assert go.disabled and go.label == "Close AAPL now"
    assert rt.store.scalar("SELECT COUNT(*) FROM commands WHERE kind='close_position'") == 0
    assert closing_sells(rt, "AAPL") == 0
    # Cancel closes the confirmation without sending anything
    tab1.button(key="confirm_cancel").click().run()
    assert "confirm_go" not in {b.key for b in tab1.button}
    tab1.button(key="close_AAPL").click().run()
    tab1.checkbox(key="confirm_close_AAPL").check().run()
    tab1.button(key="confirm_go").click().run()
    assert not tab1.exception, tab1.exception
    assert any(m.startswith("Close AAPL: closing AAPL x10") for m in (s.value for s in tab1.success)), messages(tab1)
    assert closing_sells(rt, "AAPL") == 1
    cmd = rt.store.one("SELECT * FROM commands WHERE kind='close_position'")
    assert cmd["who"].startswith("ui:") and cmd["status"] == "done" and '"AAPL"' in cmd["payload"]
    assert tab1.button(key="close_AAPL").disabled and tab1.button(key="close_AAPL").label == "Closing AAPL…"
    assert not tab1.button(key="close_NVDA").disabled
    # the second tab still shows an enabled Close: its click is answered, and no second order is made
    tab2.button(key="close_AAPL").click().run()
    tab2.checkbox(key="confirm_close_AAPL").check().run()
    tab2.button(key="confirm_go").click().run()
    assert any("already closing AAPL" in w.value for w in tab2.warning), messages(tab2)
    assert closing_sells(rt, "AAPL") == 1
    # each answer stays on its tab through the page's refreshes (before: gone at the next rerun)
    for _ in range(2):
        tab1.run()
        tab2.run()
    assert any(m.startswith("Close AAPL: closing AAPL x10") for m in (s.value for s in tab1.success)), messages(tab1)
    assert any("already closing AAPL" in w.value for w in tab2.warning), messages(tab2)
    drive(rt, 2)
    assert rt.store.scalar("SELECT exit_reason FROM trades WHERE symbol='AAPL'") == "manual_close"
    at = history_page()
    assert "close_AAPL" not in {b.key for b in at.button} and "close_NVDA" in {b.key for b in at.button}


def test_flatten_all_behind_its_confirmation_closes_everything_and_pauses(rt):
    at = history_page()
    at.button(key="flatten_all").click().run()
    assert at.button(key="confirm_go").disabled and at.button(key="confirm_go").label == "Flatten all now"
    assert any("pause new entries" in e.value for e in at.error)
    at.checkbox(key="confirm_flatten").check().run()
    at.button(key="confirm_go").click().run()
    assert not at.exception, at.exception
    assert any(s.value.startswith("Flatten all: entries paused") for s in at.success), messages(at)
    at.run()
    at.run()
    assert any(s.value.startswith("Flatten all: entries paused") for s in at.success), messages(at)
    next(b for b in at.button if b.key.startswith("dismiss_positions_")).click().run()
    assert not any(s.value.startswith("Flatten all") for s in at.success), messages(at)
    assert rt.engine.params.paused
    assert rt.store.one("SELECT who, source FROM param_audit WHERE name='paused'")["source"] == "flatten"
    assert closing_sells(rt, "AAPL") == 1 and closing_sells(rt, "NVDA") == 1
    drive(rt, 2)
    assert rt.store.query("SELECT * FROM positions") == []
    assert {r["exit_reason"] for r in rt.store.query("SELECT exit_reason FROM trades")} == {"flatten"}
    at = history_page()
    assert any("No open positions" in c.value for c in at.caption)
    assert views.live_params(rt.store)["paused"] is True  # what the sidebar's Pause switch shows

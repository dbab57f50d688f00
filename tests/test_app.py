"""Streamlit pages under AppTest on a seeded database, with the real runtime and engine behind them.

The runtime is created with ENGINE_JOBS=0 and a SimClock the test moves, so
every figure on screen can be compared with the database.
"""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from core import views
from core.clock import UTC, SimClock, session_bounds
from core.config import load_settings
from core.runtime import Runtime, active_runtime, shared_runtime, stop_all

APP = str(Path(__file__).resolve().parents[1] / "app.py")
DAY = datetime(2025, 3, 4).date()
OPEN = session_bounds(DAY)[0].astimezone(UTC)


def drive(rt: Runtime, until: datetime, step_s: int = 30) -> None:
    clock = rt.clock
    assert isinstance(clock, SimClock)
    t = clock.now()
    while t < until:
        t = min(until, t + timedelta(seconds=step_s))
        clock.set(t)
        rt.run_tick()


def attach_clock(rt: Runtime, start: datetime) -> SimClock:
    rt.clock = SimClock(start)
    return rt.clock


@pytest.fixture(scope="module")
def seeded_db(tmp_path_factory) -> tuple[Path, datetime]:
    """Two hours in AUTO mode (orders, fills, trades), then manual mode until an intent waits for approval."""
    path = tmp_path_factory.mktemp("seed") / "seed.db"
    s = load_settings(db_path=str(path), engine_jobs=False, seed=11)
    rt = Runtime(s, today=DAY + timedelta(days=1))
    attach_clock(rt, OPEN + timedelta(minutes=1))
    rt.engine.set_params({"auto_mode": True}, who="seed", now=rt.clock.now())
    drive(rt, OPEN + timedelta(hours=2))
    rt.engine.set_params({"auto_mode": False}, who="seed", now=rt.clock.now())
    end = rt.clock.now()
    for _ in range(400):
        if rt.store.scalar("SELECT COUNT(*) FROM intents WHERE status='pending' AND side='buy'"):
            break
        drive(rt, end + timedelta(seconds=30))
        end = rt.clock.now()
    assert rt.store.scalar("SELECT COUNT(*) FROM intents WHERE status='pending'"), "seed produced no pending intent"
    assert rt.store.scalar("SELECT COUNT(*) FROM trades") > 0
    rt.store.set_meta("sim_clock", end.isoformat())
    rt.stop()
    return path, end


@pytest.fixture
def app_env(seeded_db, tmp_path, monkeypatch):
    """A copy of the seeded database, the app's settings in the environment, one runtime on a frozen clock."""
    src, end = seeded_db
    db = tmp_path / "app.db"
    shutil.copy(src, db)
    monkeypatch.setenv("DB_PATH", str(db))
    monkeypatch.setenv("ENGINE_JOBS", "0")
    monkeypatch.setenv("SEED", "11")
    st.cache_resource.clear()
    stop_all()
    rt = shared_runtime(load_settings())
    attach_clock(rt, end)
    yield rt, db
    st.cache_resource.clear()
    stop_all()


def new_app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at


def page(at: AppTest, name: str) -> AppTest:
    at.switch_page(f"pages/{name}.py").run()
    assert not at.exception, at.exception
    return at


def table(at: AppTest, *columns: str):
    """The first dataframe on the page holding all these columns (AppTest does not expose dataframe keys)."""
    for d in at.dataframe:
        if set(columns) <= set(d.value.columns):
            return d.value
    raise KeyError(columns)


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def test_every_page_renders_the_seeded_figures(app_env):
    rt, _ = app_env
    store = rt.store
    at = new_app()
    # Live signals: the counters and the per-ticker table match the database
    totals = views.signal_totals(store)
    assert metric(at, "Actionable") == str(totals["actionable"])
    assert metric(at, "Suppressed") == str(totals["suppressed"])
    latest = table(at, "symbol", "tier", "vol_spike")
    assert set(latest["symbol"]) == {r["symbol"] for r in store.query(
        "SELECT DISTINCT symbol FROM signals WHERE decision != 'skipped'")}
    # Approvals: one Approve button per pending intent
    page(at, "approvals")
    pending = [r["id"] for r in store.query("SELECT id FROM intents WHERE status='pending'")]
    assert {b.key for b in at.button if b.key and b.key.startswith("approve_")} == {f"approve_{i}" for i in pending}
    # Basket health: the consecutive-tick counters are the router's
    page(at, "baskets")
    saved = {r["name"]: r for r in store.query("SELECT * FROM basket_state")}
    shown = [m.value for m in at.metric if m.label == "Consecutive ticks"]
    assert shown == [f"{saved[b.name]['consecutive']} / 2" for b in rt.s.universe.baskets]
    # Risk gauges: nine gauges (LLM calls and spend among them), the exposure gauge shows the engine's summary
    page(at, "risk")
    charts = at.get("plotly_chart")
    assert len(charts) == 9
    summary = views.risk_gauges(store, rt.s, rt.clock.now())["summary"]
    spec = next(c.proto.spec for c in charts if "Exposure" in c.proto.spec)
    assert f"{round(summary['exposure_pct'] * 100, 3)}" in spec
    # Trade history: orders, fills and trades tables hold the database's rows; CSV export is offered
    page(at, "history")
    assert len(table(at, "broker_order_id")) == store.scalar("SELECT COUNT(*) FROM orders")
    assert len(table(at, "fee", "client_order_id")) == store.scalar("SELECT COUNT(*) FROM fills")
    assert len(table(at, "pnl", "mae", "mfe")) == store.scalar("SELECT COUNT(*) FROM trades")
    assert metric(at, "Closed trades") == str(store.scalar("SELECT COUNT(*) FROM trades"))


def test_sliders_reach_the_running_engine_and_are_audited(app_env):
    rt, _ = app_env
    at = new_app()
    before = rt.engine.params.cutoff_delta
    at.slider(key="w_cutoff_delta").set_value(0.05).run()
    assert not at.exception
    assert rt.engine.params.cutoff_delta == pytest.approx(0.05)
    # a second browser session (tab) moves the cooldown slider
    new_app().slider(key="w_cooldown_s").set_value(300).run()
    assert rt.engine.params.cooldown_s == 300
    audit = rt.store.query("SELECT name, old, new, who FROM param_audit WHERE name IN ('cutoff_delta','cooldown_s') "
                           "AND source='command' ORDER BY id")
    assert [(a["name"], float(a["old"]), float(a["new"])) for a in audit] == [
        ("cutoff_delta", before, 0.05), ("cooldown_s", 180.0, 300.0)]
    assert all(a["who"].startswith("ui") for a in audit)
    # the next tick uses it: the cutoff written with each decision moves by the delta
    t0 = rt.clock.now()
    drive(rt, t0 + timedelta(minutes=3))
    cut = rt.store.query("SELECT cutoff, vol_spike FROM signals WHERE ts > ? AND cutoff IS NOT NULL", (t0.isoformat(),))
    assert cut and all(round(c["cutoff"] - 0.05, 4) in (0.28, 0.33, 0.32, 0.37, 0.35, 0.40) for c in cut)
    # a fresh session (another tab) shows the engine's value, and it survives a restart
    assert new_app().slider(key="w_cutoff_delta").value == pytest.approx(0.05)
    settings = rt.s
    stop_all()
    again = Runtime(settings)
    assert again.engine.params.cutoff_delta == pytest.approx(0.05) and again.engine.params.cooldown_s == 300
    again.stop()


def _pending_buy(rt: Runtime) -> dict:
    return rt.store.one("SELECT * FROM intents WHERE status='pending' AND side='buy' ORDER BY created_at LIMIT 1")


def _broker_orders_for(rt: Runtime, symbol: str, since: str) -> int:
    # parent orders the simulated broker accepted for this symbol since the intent was created
    return rt.store.scalar("SELECT COUNT(*) FROM sim_orders WHERE parent_id IS NULL AND symbol=? AND submitted_at >= ?",
                           (symbol, datetime.fromisoformat(since).timestamp()))


def test_approve_clicked_twice_in_two_tabs_sends_one_order(app_env):
    rt, _ = app_env
    intent = _pending_buy(rt)
    assert intent is not None
    tab1, tab2 = page(new_app(), "approvals"), page(new_app(), "approvals")
    key = f"approve_{intent['id']}"
    stale = tab2.button(key=key)  # tab 2 still shows the intent after tab 1 approved it
    tab1.button(key=key).click().run()
    assert not tab1.exception
    stale.click().run()
    assert not tab2.exception
    row = rt.store.one("SELECT status, client_order_id, decided_by FROM intents WHERE id=?", (intent["id"],))
    assert row["status"] == "submitted" and row["decided_by"].startswith("ui")
    assert _broker_orders_for(rt, intent["symbol"], intent["created_at"]) == 1
    assert rt.store.scalar("SELECT COUNT(*) FROM orders WHERE intent_id=?", (intent["id"],)) == 1
    results = [r["result"] for r in rt.store.query(
        "SELECT result FROM commands WHERE kind='approve' AND payload LIKE ? ORDER BY id", (f"%{intent['id']}%",))]
    assert results == ["submitted", "already submitted"]
    # the same click replayed through the durable command path is still one order
    rt.send_command("approve", {"intent_id": intent["id"]})
    assert _broker_orders_for(rt, intent["symbol"], intent["created_at"]) == 1
    shown = [m.value for m in list(tab2.warning) + list(tab2.success)]
    assert any("already submitted" in v for v in shown), shown


def test_reject_leaves_no_order(app_env):
    rt, _ = app_env
    intent = _pending_buy(rt)
    at = page(new_app(), "approvals")
    at.button(key=f"reject_{intent['id']}").click().run()
    assert not at.exception
    row = rt.store.one("SELECT status, note FROM intents WHERE id=?", (intent["id"],))
    assert row["status"] == "rejected" and row["note"] == "rejected by trader"
    assert rt.store.scalar("SELECT COUNT(*) FROM orders WHERE intent_id=?", (intent["id"],)) == 0
    assert _broker_orders_for(rt, intent["symbol"], intent["created_at"]) == 0
    assert f"approve_{intent['id']}" not in {b.key for b in at.button}


def test_paused_engine_creates_no_new_intents(app_env):
    rt, _ = app_env
    at = new_app()
    at.toggle(key="w_paused").set_value(True).run()
    assert not at.exception and rt.engine.params.paused
    t0 = rt.clock.now()
    n0 = rt.store.scalar("SELECT COUNT(*) FROM intents WHERE kind IN ('entry','basket')")
    drive(rt, t0 + timedelta(minutes=90))
    assert rt.store.scalar("SELECT COUNT(*) FROM intents WHERE kind IN ('entry','basket')") == n0
    # the signals were there: they were suppressed because of the pause
    assert rt.store.scalar("SELECT COUNT(*) FROM signals WHERE reason='paused' AND ts > ?", (t0.isoformat(),)) > 0
    # resuming trades again
    new_app().toggle(key="w_paused").set_value(False).run()
    assert not rt.engine.params.paused
    t1 = rt.clock.now()
    drive(rt, t1 + timedelta(minutes=120))
    assert rt.store.scalar("SELECT COUNT(*) FROM intents WHERE kind IN ('entry','basket')") > n0


def test_bad_environment_value_is_a_clear_page_error(tmp_path, monkeypatch):
    monkeypatch.setenv("DB_PATH", str(tmp_path / "x.db"))
    monkeypatch.setenv("TIER_A_TOKENS", "6  # Tier A")
    st.cache_resource.clear()
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert not at.exception
    assert any("TIER_A_TOKENS" in e.value for e in at.error)
    assert active_runtime(str(tmp_path / "x.db")) is None  # nothing started on a bad configuration


def test_protections_panel_shows_an_active_rule_and_releases_it(app_env):
    rt, _ = app_env
    from core.rules.protections import RULES

    now = rt.clock.now()
    rt.store.insert("trades", {"symbol": "NVDA", "kind": "entry", "qty": 1, "entry_ts": now.isoformat(),
                               "entry_price": 100.0, "exit_ts": now.isoformat(), "exit_price": 98.0, "pnl": -2.0,
                               "ret": -0.02, "exit_reason": "stop_loss", "mae": -0.02, "mfe": 0.0, "fees": 0.0})
    rt.engine.s = rt.engine.s.model_copy(update={"protection_stoploss_count": 1})
    guard = tuple(r for r in RULES if r.name == "stoploss_guard")
    assert [f.rule for f in rt.engine.run_protections(now, guard)] == ["stoploss_guard"]
    at = page(new_app(), "risk")
    warned = [w.value for w in at.warning if "stoploss_guard" in w.value]
    assert warned and ("30 min left" in warned[0] or "29 min left" in warned[0]), warned
    pid = rt.store.scalar("SELECT id FROM protections")
    at.button(key=f"release_{pid}").click().run()
    assert not at.exception
    row = rt.store.one("SELECT released_at, released_by FROM protections WHERE id=?", (pid,))
    assert row["released_at"] is not None and row["released_by"].startswith("ui")
    at = page(new_app(), "risk")
    assert not [w for w in at.warning if "stoploss_guard" in w.value]
    assert "stoploss_guard" in set(table(at, "rule", "why")["rule"])


def test_kpi_page_shows_the_windows_figures_snapshots_and_the_verdict(app_env):
    rt, _ = app_env
    from core.research import kpi

    now = rt.clock.now()
    at = page(new_app(), "kpis")
    hour = kpi.kpi_report(rt.store, rt.s, now - timedelta(hours=1), now)["all"]
    assert metric(at, "Actionable") == str(hour["actionable"]) and metric(at, "Signals") == str(hour["generated"])
    at.selectbox(key="kpi_window").select("This session").run()
    assert not at.exception, at.exception
    session = kpi.kpi_report(rt.store, rt.s, views.kpi_window("This session", now)[0], now)["all"]
    assert session["generated"] > hour["generated"] > 0  # the seed ran well over an hour
    assert metric(at, "Signals") == str(session["generated"])
    assert metric(at, "Trades") == str(session["trades"]) and session["trades"] > 0
    by_tier = table(at, "tier", "actionable")
    assert dict(zip(by_tier["tier"], by_tier["actionable"], strict=True)) == {
        t: g["actionable"] for t, g in kpi.kpi_report(rt.store, rt.s, views.kpi_window("This session", now)[0],
                                                      now)["by_tier"].items()}
    # the hourly snapshot job writes a row the page then charts and lists
    assert not any({"ts", "strong_rate"} <= set(d.value.columns) for d in at.dataframe)
    rt.run_kpi_snapshot()
    at = page(new_app(), "kpis")
    snaps = table(at, "ts", "strong_rate", "flip_flop_rate")
    assert len(snaps) == 1 and int(snaps["actionable"].iloc[0]) == hour["actionable"]
    assert [w.value for w in at.warning if "in progress" in w.value]  # the seeded session is not over yet


def test_password_gate_when_app_password_is_set(app_env, monkeypatch):
    monkeypatch.setenv("APP_PASSWORD", "canary-pass-7f3a")
    at = new_app()
    assert [t.label for t in at.text_input] == ["Password"] and not at.metric  # nothing behind the gate
    for k in range(5):
        at.text_input[0].input("wrong")
        at.button[0].click().run()  # a form sends its fields with the submit
        assert any("Wrong password" in e.value for e in at.error), k
    at.run()
    assert any("Too many wrong passwords" in e.value for e in at.error)  # locked out for a while
    at = new_app()  # a new browser session (the lock-out is per session)
    at.text_input[0].input("canary-pass-7f3a")
    at.button[0].click().run()
    assert not at.exception and metric(at, "Actionable") is not None  # the Live signals page renders
    assert all("canary-pass-7f3a" not in str(el.value) for el in at.markdown)


def test_no_password_and_a_non_loopback_address_shows_nothing(app_env, monkeypatch):
    from streamlit import config

    monkeypatch.delenv("APP_PASSWORD", raising=False)
    old = config.get_option("server.address")
    config.set_option("server.address", "0.0.0.0")
    try:
        at = AppTest.from_file(APP, default_timeout=60)
        at.run()
        assert any("no APP_PASSWORD is set" in e.value for e in at.error)
        assert not at.metric and not at.button
    finally:
        config.set_option("server.address", old)

"""Streamlit pages under AppTest on a seeded database, with the real runtime and engine behind them.

The runtime is created with ENGINE_JOBS=0 and a SimClock the test moves, so
every figure on screen can be compared with the database.
"""

from __future__ import annotations

import json
import re
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from core import views
from core.clock import UTC, SimClock, session_bounds
from core.config import load_settings
from core.runtime import Runtime, SimSessionClock, active_runtime, shared_runtime, stop_all
from tests.helpers import new_app

APP = str(Path(__file__).resolve().parents[1] / "app.py")
DAY = datetime(2025, 3, 4).date()
OPEN = session_bounds(DAY)[0].astimezone(UTC)
W0 = 1_741_100_000.0  # the wall clock (POSIX s) while the seed runs; the tests move it by hand, never by sleeping


class FakeWall:
    """An injectable wall clock: the approval windows of manual intents run on it."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> float:
        self.t += seconds
        return self.t


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
    rt = Runtime(s, today=DAY + timedelta(days=1), wall=FakeWall(W0))  # frozen: no intent expires on the wall
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
    rt.engine.wall = FakeWall(W0)  # the seed's wall time: its pending intents have their whole window left
    yield rt, db
    st.cache_resource.clear()
    stop_all()


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


def recent_decisions(at: AppTest) -> tuple[pd.DataFrame, list[str]]:
    """The Approvals page's Recent decisions table and the ids of its highlighted rows (the Styler's CSS)."""
    d = next(d for d in at.dataframe if {"id", "status", "your click"} <= set(d.value.columns))
    rows = sorted({int(i) for i in re.findall(r"_row(\d+)_col0\b", d.proto.arrow_data.styler.styles)})
    return d.value, [d.value["id"].iloc[i] for i in rows]


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
    # the score bars: one per ticker, from 0, coloured by the score's sign (charts.score_colour)
    bars = next(json.loads(c.proto.spec) for c in at.get("plotly_chart")
                if "Latest score per ticker" in c.proto.spec)["data"][0]
    assert bars["y"] == latest["symbol"].tolist() and bars["base"] == 0
    assert bars["marker"]["color"] == ["#c62828" if v < 0 else "#2e7d32" if v > 0 else "#9e9e9e"
                                       for v in latest["score"]]
    assert {"#c62828", "#2e7d32"} <= set(bars["marker"]["color"])  # the seeded market has both signs
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
                           "AND source='slider' ORDER BY id")
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
    assert [r.split(":")[0] for r in results] == ["submitted", "already submitted"]
    assert results[0].startswith(f"submitted: BUY {intent['qty']:g} {intent['symbol']} at ~$")
    # the same click replayed through the durable command path is still one order
    rt.send_command("approve", {"intent_id": intent["id"]})
    assert _broker_orders_for(rt, intent["symbol"], intent["created_at"]) == 1
    # what the stale tab's click did stays on its page: its row in Recent decisions, highlighted, whole id
    recent, lit = recent_decisions(tab2)
    row = recent[recent["id"] == intent["id"]].iloc[0]
    assert (row["status"], row["your click"]) == ("submitted", "approve: already submitted")
    assert lit == [intent["id"]]
    tab2.run()  # the next refresh: still there
    assert recent_decisions(tab2)[1] == [intent["id"]]


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


# ---------------------------------------------------------------- approvals a human can make (issue 17)
SPEED = 60  # one market minute per wall second: a 120-second window in market time would last 2 real seconds


@pytest.fixture
def fast_app(app_env):
    """The seeded app at SIM_SPEED=60: the market clock runs 60 x the fake wall clock, the one the approval
    windows run on. Moving the wall moves both, as in the real app."""
    rt, _ = app_env
    wall = rt.engine.wall
    rt.clock = SimSessionClock(rt.clock.now(), SPEED, wall=wall)
    return rt, wall


def _status(rt: Runtime, intent_id: str) -> dict:
    return rt.store.one("SELECT status, note, decided_by FROM intents WHERE id=?", (intent_id,))


def _orders_of(rt: Runtime, intent_id: str) -> tuple[int, int]:
    """(our order rows, the simulated broker's parent orders) of one intent."""
    cid = rt.store.scalar("SELECT client_order_id FROM intents WHERE id=?", (intent_id,))
    return (rt.store.scalar("SELECT COUNT(*) FROM orders WHERE intent_id=?", (intent_id,)),
            rt.store.scalar("SELECT COUNT(*) FROM sim_orders WHERE parent_id IS NULL AND client_order_id=?", (cid,)))


def _countdown(at: AppTest, intent_id: str) -> str:
    box = next(c for c in at.get("flex_container") if getattr(c, "key", None) == f"intent_{intent_id}")
    return next(m.value for m in box.markdown if m.value.startswith("expires in") or m.value == "**expired**")


def _wait_for_pending(rt: Runtime, wall: FakeWall, n: int) -> list[str]:
    """Tick (15 market seconds a quarter wall second) until n intents wait; no window closes meanwhile."""
    start = wall()
    while rt.store.scalar("SELECT COUNT(*) FROM intents WHERE status='pending'") < n:
        assert wall() - start < rt.s.intent_ttl_s / 2, f"fewer than {n} intents waiting"
        wall.advance(0.25)
        rt.run_tick()
    return [r["id"] for r in rt.store.query("SELECT id FROM intents WHERE status='pending' ORDER BY created_at")]


def test_the_window_counts_wall_seconds_at_high_speed_and_approve_still_submits(fast_app):
    rt, wall = fast_app
    intent = _pending_buy(rt)
    ttl = rt.s.intent_ttl_s
    assert intent["approve_by"] == W0 + ttl  # the deadline on the wall clock, taken when the intent was queued
    t0 = rt.clock.now()
    wall.advance(ttl - 1)  # 119 real seconds: 119 market minutes at x60, far past the market-time expiry
    assert rt.clock.now() - t0 == timedelta(minutes=ttl - 1)
    assert rt.clock.now() > datetime.fromisoformat(intent["expires_at"])
    rt.run_tick()  # the tick's expiry check reads the wall clock too: still waiting
    assert _status(rt, intent["id"])["status"] == "pending"
    at = page(new_app(), "approvals")
    assert _countdown(at, intent["id"]) == "expires in **0:01**"
    at.button(key=f"approve_{intent['id']}").click().run()
    assert not at.exception, at.exception
    assert _status(rt, intent["id"])["status"] == "submitted"
    assert _orders_of(rt, intent["id"]) == (1, 1)
    recent, lit = recent_decisions(at)
    assert lit == [intent["id"]] and recent[recent["id"] == intent["id"]]["your click"].item() == "approve: submitted"


@pytest.mark.parametrize("elapsed", [0.0, 37.0, 59.5, 119.2])
def test_the_countdown_shows_the_wall_seconds_left(fast_app, elapsed):
    rt, wall = fast_app
    intent = _pending_buy(rt)
    wall.advance(elapsed)
    at = page(new_app(), "approvals")
    left = intent["approve_by"] - wall()  # what really remains, in wall seconds
    assert _countdown(at, intent["id"]) == f"expires in **{int(left) // 60}:{int(left) % 60:02d}**"
    assert any(f"the market runs ×{SPEED}" in c.value for c in at.caption)
    if elapsed == 37.0:
        assert _countdown(at, intent["id"]) == "expires in **1:23**"


def test_approve_after_the_wall_window_is_refused_and_stays_visible(fast_app):
    rt, wall = fast_app
    intent = _pending_buy(rt)
    wall.advance(rt.s.intent_ttl_s - 0.1)
    at = page(new_app(), "approvals")  # rendered with a tenth of a second left: Approve is enabled
    button = at.button(key=f"approve_{intent['id']}")
    assert not button.disabled
    wall.advance(0.1)  # the window closes (approve_by == now) before the click lands
    button.click().run()
    assert not at.exception, at.exception
    assert _status(rt, intent["id"])["status"] == "expired" and _status(rt, intent["id"])["note"] == (
        "expired before decision")
    assert _orders_of(rt, intent["id"]) == (0, 0)
    recent, lit = recent_decisions(at)
    assert lit == [intent["id"]] and recent[recent["id"] == intent["id"]]["your click"].item() == "approve: expired"


def test_a_tick_expires_a_manual_intent_at_its_wall_deadline_not_before(fast_app):
    rt, wall = fast_app
    intent = _pending_buy(rt)
    wall.advance(rt.s.intent_ttl_s - 0.5)
    rt.run_tick()
    assert _status(rt, intent["id"])["status"] == "pending"
    wall.advance(0.5)
    rt.run_tick()
    assert _status(rt, intent["id"]) == {"status": "expired", "note": "not approved in time", "decided_by": "engine"}


def test_approve_all_sends_each_intent_once_across_two_tabs_and_a_double_click(fast_app):
    rt, wall = fast_app
    ids = _wait_for_pending(rt, wall, 2)
    tab1, tab2 = page(new_app(), "approvals"), page(new_app(), "approvals")
    stale1, stale2 = tab1.button(key="bulk_approve"), tab2.button(key="bulk_approve")
    assert stale1.label == f"Approve all ({len(ids)})"
    stale1.click().run()
    assert not tab1.exception, tab1.exception
    stale2.click().run()  # the other tab still showed them all
    assert not tab2.exception, tab2.exception
    for iid in ids:  # and the same commands once more through the durable path (a double click)
        rt.send_command("approve", {"intent_id": iid})
    statuses = {iid: _status(rt, iid)["status"] for iid in ids}
    assert set(statuses.values()) == {"submitted"}, statuses
    assert {iid: _orders_of(rt, iid) for iid in ids} == {iid: (1, 1) for iid in ids}
    for iid in ids:
        results = [r["result"] for r in rt.store.query(
            "SELECT result FROM commands WHERE kind='approve' AND payload LIKE ? ORDER BY id", (f'%"{iid}"%',))]
        assert [r.split(":")[0] for r in results] == ["submitted", "already submitted", "already submitted"], \
            (iid, results)
    recent, lit = recent_decisions(tab2)
    assert sorted(lit) == sorted(ids)  # the whole click is highlighted, every id whole
    assert set(recent[recent["id"].isin(ids)]["your click"]) == {"approve: already submitted"}


def test_reject_all_rejects_every_waiting_intent_and_sends_nothing(fast_app):
    rt, wall = fast_app
    ids = _wait_for_pending(rt, wall, 2)
    at = page(new_app(), "approvals")
    at.button(key="bulk_reject").click().run()
    assert not at.exception, at.exception
    assert {iid: (_status(rt, iid)["status"], _status(rt, iid)["note"]) for iid in ids} == {
        iid: ("rejected", "rejected by trader") for iid in ids}
    assert {iid: _orders_of(rt, iid) for iid in ids} == {iid: (0, 0) for iid in ids}
    assert not [b for b in at.button if b.key and b.key.startswith(("approve_", "bulk_"))]
    assert sorted(recent_decisions(at)[1]) == sorted(ids)


def test_the_pending_count_is_in_the_navigation_and_the_sidebar(fast_app, monkeypatch):
    rt, wall = fast_app
    titles: list[list[str]] = []
    real = st.navigation

    def recording(pages, **kw):  # type: ignore[no-untyped-def]
        titles.append([p.title for p in pages])
        return real(pages, **kw)

    monkeypatch.setattr(st, "navigation", recording)
    ids = _wait_for_pending(rt, wall, 2)
    n = rt.store.scalar("SELECT COUNT(*) FROM intents WHERE status='pending'")
    assert n == len(ids) >= 2
    at = new_app()
    assert titles[-1][1] == f"Approvals ({n})"
    assert [p.value for p in at.sidebar.get("page_link")] == [f"Approvals waiting: {n}"]
    page(at, "approvals").button(key="bulk_reject").click().run()
    at.run()
    assert titles[-1][1] == "Approvals"
    assert [p.value for p in at.sidebar.get("page_link")] == ["No approvals waiting"]


def _intent_symbol(rt: Runtime, intent_id: str) -> str:
    return rt.store.scalar("SELECT symbol FROM intents WHERE id=?", (intent_id,))


def test_a_new_intent_is_announced_once_per_browser_session(fast_app):
    rt, wall = fast_app
    first = [r["id"] for r in rt.store.query("SELECT id FROM intents WHERE status='pending'")]
    assert first
    at = new_app()
    assert not at.toast  # a page load: what already waits is in the count, not news
    ids = _wait_for_pending(rt, wall, len(first) + 1)
    new = [i for i in ids if i not in first]
    at.run()
    assert len(at.toast) == 1 and _intent_symbol(rt, new[0]) in at.toast[0].value
    assert "approve within" in at.toast[0].value
    at.run()  # the next refresh: nothing new, no toast
    assert not at.toast
    page(at, "kpis")  # another page of the same session: told already
    assert not at.toast
    assert not new_app().toast  # a later page load (a new browser session): never again


def test_no_toast_for_a_decided_intent_nor_on_the_approvals_page(fast_app):
    rt, wall = fast_app
    at = new_app()
    before = [r["id"] for r in rt.store.query("SELECT id FROM intents WHERE status='pending'")]
    ids = _wait_for_pending(rt, wall, len(before) + 1)
    decided = [i for i in ids if i not in before]
    for iid in decided:  # decided in another tab before this one looked again
        rt.send_command("reject", {"intent_id": iid})
    at.run()
    assert not at.toast
    approvals = page(at, "approvals")
    ids = _wait_for_pending(rt, wall, rt.store.scalar("SELECT COUNT(*) FROM intents WHERE status='pending'") + 1)
    approvals.run()  # its cards show the new intent: no toast over them
    assert not approvals.toast
    assert any(getattr(c, "key", None) == f"intent_{ids[-1]}" for c in approvals.get("flex_container"))
    page(approvals, "kpis")  # and it is not announced later either: this session has seen it
    assert not approvals.toast


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
    # the rules, each with the least sample it is judged on
    rules = table(at, "rule", "minimum sample").set_index("rule")
    assert list(rules.index) == [*(r.name for r in RULES), "Kelly figures (Risk gauges)"]
    assert all(rules["minimum sample"])
    assert rules.loc["stoploss_guard", "minimum sample"] == "stop_outs >= 3"


def test_kpi_page_shows_the_windows_figures_snapshots_and_the_verdict(app_env):
    rt, _ = app_env
    from core.metrics import kpi

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
    from ui import auth

    clock = FakeWall(1000.0)
    monkeypatch.setattr(auth.GUARD, "clock", clock)
    monkeypatch.setenv("APP_PASSWORD", "canary-pass-7f3a")
    at = new_app()
    assert [t.label for t in at.text_input] == ["Password"] and not at.metric  # nothing behind the gate
    for k in range(5):
        at.text_input[0].input("wrong")
        at.button[0].click().run()  # a form sends its fields with the submit
        assert any("Wrong password" in e.value or "Too many" in e.value for e in at.error), k
    at.run()
    assert any("Too many wrong passwords" in e.value for e in at.error)  # locked out for a while
    at = new_app()  # a new browser session: the lock-out is the address's, not the session's (issue 30)
    at.text_input[0].input("canary-pass-7f3a")
    at.button[0].click().run()
    assert any("Too many wrong passwords" in e.value for e in at.error) and not at.metric
    clock.t += auth.LOCKOUT_S  # the lockout is over (the guard's clock, moved by hand)
    at = new_app()
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


def _kelly_tiles(at: AppTest) -> tuple[str, str]:
    tiles = {m.label: m.value for m in at.metric}
    return tiles["Kelly fraction"], tiles["Kelly margin"]


def test_kelly_waits_for_its_minimum_sample_of_closed_trades(app_env):
    rt, _ = app_env
    rt.store.execute("DELETE FROM trades")
    # a winner and a loser in turn: win rate 50 %, payoff 2.0 -> Kelly 0.25, margin 50x at 0.5 % per trade
    rows = [{"symbol": "AAPL", "kind": "entry", "qty": 1, "entry_ts": "2025-03-04T15:00:00+00:00",
             "entry_price": 100.0, "exit_ts": "2025-03-04T15:30:00+00:00", "exit_price": 100.0,
             "pnl": 20.0 if i % 2 == 0 else -10.0, "ret": 0.0, "exit_reason": "test", "mae": 0.0, "mfe": 0.0,
             "fees": 0.0} for i in range(29)]
    for r in rows:
        rt.store.insert("trades", r)
    rt.store.commit()
    at = page(new_app(), "risk")
    assert _kelly_tiles(at) == ("n/a", "n/a")  # 29: not yet, and the page says why
    assert [c.value for c in at.caption if c.value.startswith("Kelly fraction and margin: n/a")] == [
        "Kelly fraction and margin: n/a (needs ≥ 30 closed trades with wins and losses; 29 so far)."]
    rt.store.insert("trades", {**rows[1]})  # the 30th: 15 wins of +20, 15 losses of -10
    rt.store.commit()
    at.run()
    assert _kelly_tiles(at) == ("0.250", "50.0x")
    assert not [c.value for c in at.caption if c.value.startswith("Kelly fraction and margin: n/a")]
    rules = table(at, "rule", "minimum sample")
    assert rules[rules["rule"].str.startswith("Kelly")]["minimum sample"].item().startswith("30 closed trades")


def _answer_texts(at: AppTest) -> list[str]:
    return [m.value for m in (*at.success, *at.error, *at.warning, *at.info)]


def test_an_approval_answer_says_what_was_sent_and_stays_until_dismissed(fast_app):
    rt, wall = fast_app
    ids = _wait_for_pending(rt, wall, 2)
    at = page(new_app(), "approvals")
    box = next(c for c in at.get("flex_container") if getattr(c, "key", None) == f"intent_{ids[0]}")
    # the card: the signal's price and what Approve would send at the price of the moment
    assert any(m.value.startswith("signal **$") for m in box.markdown)
    assert any(m.value.startswith("now **$") for m in box.markdown)
    assert any(m.value.startswith("Approve sends: **") and "stop **$" in m.value for m in box.markdown)
    at.button(key="bulk_approve").click().run()
    assert not at.exception, at.exception
    title = [m.value for m in at.markdown if "**Approve: " in m.value]
    assert title and f"Approve: {len(ids)} intents" in title[0]
    lines = [t for t in _answer_texts(at) if "`entry-" in t or "`basket-" in t]
    assert len(lines) == len(ids)  # one line per intent, each saying what was sent or why not, in words
    for line in lines:
        assert ": submitted: BUY " in line or ": refused: " in line, line
    for _ in range(2):  # the fragment's refreshes and an app rerun never take it away
        wall.advance(0.5)
        rt.run_tick()
        at.run()
        assert [t for t in _answer_texts(at) if "`entry-" in t or "`basket-" in t] == lines
    dismiss = next(b for b in at.button if b.key.startswith("dismiss_approvals_"))
    dismiss.click().run()
    assert not [t for t in _answer_texts(at) if "`entry-" in t or "`basket-" in t]


def test_a_refused_approval_is_said_in_words_with_its_code(fast_app):
    rt, wall = fast_app
    intent = _pending_buy(rt)
    rt.engine.set_params({"paused": True}, who="test", now=rt.clock.now())
    at = page(new_app(), "approvals")
    box = next(c for c in at.get("flex_container") if getattr(c, "key", None) == f"intent_{intent['id']}")
    assert any("Approve would be refused now: trading is paused: no new entries (paused)" in m.value
               for m in box.markdown)
    at.button(key=f"approve_{intent['id']}").click().run()
    assert any(e.value.startswith(f"Approve: 1 intent: **{intent['symbol']}**") and
               e.value.endswith("refused: trading is paused: no new entries (paused)") for e in at.error), \
        _answer_texts(at)
    at.run()
    at.run()
    assert any("refused: trading is paused" in e.value for e in at.error)
    assert _status(rt, intent["id"])["status"] == "rejected" and _orders_of(rt, intent["id"]) == (0, 0)


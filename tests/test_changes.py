"""What changed, and who changed it (issue 17, part 3): one audit row per slider move, the Risk page's Changes
panel, "Apply to live" of a research run, and the ``source`` column on databases made before it existed.

The app runs under AppTest with the real runtime and engine behind it (ENGINE_JOBS=0, a SimClock the test holds);
the slider's steps are grouped on the engine's wall clock, which the test replaces by one it moves by hand.
Every AppTest is the same browser session to the app ("test session id"), so a step of a sidebar slider in a
fresh AppTest is another step of the same person.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from core import views
from core.clock import NY, SimClock, session_bounds
from core.config import load_settings
from core.engine.params import SLIDER_COALESCE_S
from core.research import runs
from core.runtime import Runtime, shared_runtime, stop_all
from core.state.store import Store
from tests.helpers import new_app

APP = str(Path(__file__).resolve().parents[1] / "app.py")
DAY = datetime(2025, 3, 4).date()
NOON = session_bounds(DAY)[0].astimezone(UTC) + timedelta(hours=2, minutes=30)


class WallClock:
    """The engine's wall clock for grouping slider steps: moved by the test, never by time passing."""

    def __init__(self) -> None:
        self.t = 1_000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def live(tmp_path, monkeypatch) -> tuple[Runtime, WallClock]:
    monkeypatch.setenv("DB_PATH", str(tmp_path / "app.db"))
    monkeypatch.setenv("ENGINE_JOBS", "0")
    st.cache_resource.clear()
    stop_all()
    rt = shared_runtime(load_settings())
    rt.clock = SimClock(NOON)
    wall = WallClock()
    rt.engine.live.wall_clock = wall
    yield rt, wall
    st.cache_resource.clear()
    stop_all()


def audit(rt: Runtime, name: str) -> list[dict]:
    return rt.store.query("SELECT who, old, new, source, ts FROM param_audit WHERE name=? ORDER BY id", (name,))


def move(key: str, value: float) -> None:
    """One step of a sidebar slider, as the browser sends it."""
    at = new_app()
    at.slider(key=key).set_value(value).run()
    assert not at.exception, at.exception


# ---------------------------------------------------------------- one move, one audit row
def test_a_slider_move_is_one_change_and_a_later_move_another(live):
    rt, wall = live
    for v in (0.01, 0.02, 0.03, 0.04, 0.05):  # five arrow-key steps, 0.3 s apart
        move("w_cutoff_delta", v)
        wall.t += 0.3
    assert rt.engine.params.cutoff_delta == pytest.approx(0.05)  # every step reached the engine at once
    rows = audit(rt, "cutoff_delta")
    assert [(json.loads(r["old"]), json.loads(r["new"]), r["source"]) for r in rows] == [(0.0, 0.05, "slider")]
    assert rows[0]["who"].startswith("ui:")
    # a step exactly SLIDER_COALESCE_S after the last one still belongs to the move...
    wall.t += SLIDER_COALESCE_S - 0.3
    rt.clock.set(NOON + timedelta(minutes=1))
    move("w_cutoff_delta", 0.06)
    rows = audit(rt, "cutoff_delta")
    assert [(json.loads(r["old"]), json.loads(r["new"])) for r in rows] == [(0.0, 0.06)]
    assert rows[0]["ts"] == (NOON + timedelta(minutes=1)).isoformat()  # the time the move ended
    # ...one a moment longer after it is a change of its own, starting where the first ended
    wall.t += SLIDER_COALESCE_S + 0.01
    move("w_cutoff_delta", 0.04)
    rows = audit(rt, "cutoff_delta")
    assert [(json.loads(r["old"]), json.loads(r["new"])) for r in rows] == [(0.0, 0.06), (0.06, 0.04)]
    assert rt.engine.params.cutoff_delta == pytest.approx(0.04)


def test_steps_of_another_session_or_after_another_change_are_not_folded(live):
    rt, wall = live
    move("w_cooldown_s", 190)
    wall.t += 0.5
    # another browser session (another process's UI: its command names its own session) within the window
    res = rt.send_command("set_params", {"cooldown_s": 200, "_source": "slider"}, who="ui:another")
    assert res["status"] == "done"
    wall.t += 0.5
    move("w_cooldown_s", 210)  # the first session again: the newest row is not its own, so a new one
    wall.t += 0.5
    rt.engine.set_params({"cooldown_s": 240}, who="protection:signal_quality", now=rt.clock.now(),
                         source="protection")
    wall.t += 0.5
    move("w_cooldown_s", 250)  # the newest row is the protection's: not folded into it or behind it
    wall.t += 0.5
    move("w_cooldown_s", 260)  # but the next step is folded into this move
    rows = audit(rt, "cooldown_s")
    assert [(r["source"], json.loads(r["old"]), json.loads(r["new"])) for r in rows] == [
        ("slider", 180, 190), ("slider", 190, 200), ("slider", 200, 210), ("protection", 210, 240),
        ("slider", 240, 260)]
    assert rows[1]["who"] == "ui:another" and rows[0]["who"] == rows[2]["who"] == rows[4]["who"] != "ui:another"


def test_switches_and_the_profile_are_audited_with_their_source(live):
    rt, wall = live
    new_app().toggle(key="w_paused").set_value(True).run()
    at = new_app().selectbox(key="w_profile").set_value("relaxed").run()
    assert not at.exception
    assert audit(rt, "paused")[0]["source"] == "switch"
    sources = {r["name"]: r["source"] for r in rt.store.query("SELECT name, source FROM param_audit")}
    assert sources["profile"] == "profile" and sources["cutoff_delta"] == "profile"  # what the profile moved


def test_an_unknown_command_source_is_refused(live):
    rt, _ = live
    res = rt.send_command("set_params", {"cutoff_delta": 0.02, "_source": "whatever"}, who="ui:x")
    assert res["status"] == "failed" and "whatever" in res["result"]
    assert rt.engine.params.cutoff_delta == 0.0 and not audit(rt, "cutoff_delta")
    res = rt.send_command("set_params", {"cutoff_delta": 0.02}, who="api")  # no source: a plain command
    assert res["status"] == "done" and audit(rt, "cutoff_delta")[0]["source"] == "command"


# ---------------------------------------------------------------- the Changes panel on the Risk page
def risk_page() -> AppTest:
    at = new_app()
    at.switch_page("pages/risk.py").run()
    assert not at.exception, at.exception
    return at


def changes_table(at: AppTest) -> pd.DataFrame | None:
    return next((d.value for d in at.dataframe if list(d.value.columns) == views.CHANGE_COLUMNS), None)


def test_the_risk_page_lists_what_changed_who_and_from_where(live):
    rt, wall = live
    at = risk_page()
    assert changes_table(at) is None
    assert any("No setting has changed yet" in c.value for c in at.caption)
    for v in (0.01, 0.02, 0.03):
        move("w_cutoff_delta", v)
        wall.t += 0.2
    rt.clock.set(NOON + timedelta(minutes=5))
    new_app().toggle(key="w_auto_mode").set_value(True).run()
    rt.clock.set(NOON + timedelta(minutes=6))
    rt.engine.set_params({"cooldown_s": 150}, who="protection:signal_quality", now=rt.clock.now(),
                         source="protection")
    at.run()  # the page as it refreshes
    assert not at.exception, at.exception
    shown = changes_table(at)
    assert shown is not None
    who = audit(rt, "cutoff_delta")[0]["who"]
    expected = [
        {"when (ET)": (NOON + timedelta(minutes=6)).astimezone(NY).strftime("%Y-%m-%d %H:%M:%S"),
         "who": "protection:signal_quality", "setting": "cooldown_s", "change": "180 s → 150 s",
         "source": "protection"},
        {"when (ET)": (NOON + timedelta(minutes=5)).astimezone(NY).strftime("%Y-%m-%d %H:%M:%S"),
         "who": who, "setting": "auto_mode", "change": "off → on", "source": "switch"},
        {"when (ET)": NOON.astimezone(NY).strftime("%Y-%m-%d %H:%M:%S"),
         "who": who, "setting": "cutoff_delta", "change": "+0.00 → +0.03", "source": "slider"},
    ]
    assert shown.to_dict(orient="records") == expected
    assert expected[2]["when (ET)"].endswith("12:00:00")  # 17:00 UTC in March: New York is UTC-5


# ---------------------------------------------------------------- a database made before ``source``
def test_a_database_without_the_source_column_gets_it(tmp_path):
    path = tmp_path / "old.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE param_audit (id INTEGER PRIMARY KEY, ts TEXT, who TEXT, name TEXT, old TEXT, new TEXT)")
    con.execute("INSERT INTO param_audit(ts, who, name, old, new) VALUES (?,?,?,?,?)",
                (NOON.isoformat(), "ui:old", "paused", "false", "true"))
    con.commit()
    con.close()
    store = Store(path)
    cols = [r["name"] for r in store.query("PRAGMA table_info(param_audit)")]
    assert cols == ["id", "ts", "who", "name", "old", "new", "source"]
    store.close()
    s = load_settings(db_path=str(path), engine_jobs=False)
    rt = Runtime(s, today=DAY)
    rt.clock = SimClock(NOON + timedelta(minutes=1))
    try:
        assert rt.send_command("set_params", {"paused": True, "_source": "switch"}, who="ui:new")["status"] == "done"
        assert [(r["who"], r["source"]) for r in audit(rt, "paused")] == [("ui:old", None), ("ui:new", "switch")]
        assert list(views.changes(rt.store)["source"]) == ["switch", "–"]
    finally:
        rt.stop()


# ---------------------------------------------------------------- "Apply to live" on a research run
def save(db: Path, kind: str, params: dict) -> int:
    store = Store(db)
    try:
        eq = pd.DataFrame({"ts": [NOON, NOON + timedelta(hours=1)], "equity": [100_000.0, 100_250.0]})
        return runs.save_run(store, name=f"a {kind}", kind=kind, params=params, metrics={"trades": 1},
                             created_at=datetime(2025, 3, 5, tzinfo=UTC), equity=eq,
                             source={"kind": "synthetic", "seed": 3, "first": "2025-03-03", "last": "2025-03-04"},
                             detail={"grid": [{"cutoff_delta": 0.0, "mixer_cooldown_s": 60, "trades": 1}]}
                             if kind == "sweep" else None)
    finally:
        store.close()


def research_page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page("pages/research.py").run()
    assert not at.exception, at.exception
    return at


def button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


def test_apply_to_live_asks_first_then_sets_and_audits_the_run_s_settings(live):
    rt, _ = live
    run_id = save(Path(rt.db_path), "replay", {"cutoff_delta": 0.03, "mixer_cooldown_s": 300})
    at = research_page()
    assert at.session_state["r_open"] == [run_id]  # the newest saved run is open
    button(at, "Apply to live…").click().run()
    warning = " ".join(w.value for w in at.warning)
    assert f"Apply run #{run_id} to live trading?" in warning
    assert "+0.00 → +0.03" in warning and "180 s → 300 s" in warning
    assert (rt.engine.params.cutoff_delta, rt.engine.params.cooldown_s) == (0.0, 180)  # nothing yet
    button(at, "Cancel").click().run()
    assert not [b for b in at.button if b.label == "Confirm"]
    assert (rt.engine.params.cutoff_delta, rt.engine.params.cooldown_s) == (0.0, 180)
    assert rt.store.scalar("SELECT COUNT(*) FROM param_audit") == 0
    button(at, "Apply to live…").click().run()
    button(at, "Confirm").click().run()
    assert not at.exception, at.exception
    assert (rt.engine.params.cutoff_delta, rt.engine.params.cooldown_s) == (0.03, 300)
    rows = rt.store.query("SELECT who, name, old, new, source FROM param_audit ORDER BY name")
    assert [(r["name"], json.loads(r["old"]), json.loads(r["new"]), r["source"]) for r in rows] == [
        ("cooldown_s", 180, 300, "research"), ("cutoff_delta", 0.0, 0.03, "research")]
    assert all(r["who"].startswith("ui:") for r in rows)
    assert any(f"Run #{run_id} applied to live" in s.value for s in at.success)
    assert not [b for b in at.button if b.label == "Confirm"]


def test_a_sweep_has_no_single_setting_to_apply(live):
    rt, _ = live
    save(Path(rt.db_path), "sweep", {"grid": {"cutoff_delta": [0.0], "mixer_cooldown_s": [60]}})
    at = research_page()
    assert not [b for b in at.button if b.label == "Apply to live…"]
    assert not at.exception


def test_a_callback_for_the_value_already_live_sends_nothing(live):
    rt, _ = live
    stale = new_app()  # drawn with the default profile and cutoff
    other = rt.send_command  # another tab: relaxed profile, then its own cutoff
    assert other("set_params", {"profile": "relaxed", "_source": "profile"}, who="ui:other")["status"] == "done"
    assert other("set_params", {"cutoff_delta": 0.02, "_source": "slider"}, who="ui:other")["status"] == "done"
    commands = rt.store.scalar("SELECT COUNT(*) FROM commands")
    # the stale tab's box fires for "relaxed", which is live already: re-applying it would reset the cutoff
    stale.selectbox(key="w_profile").set_value("relaxed").run()
    assert not stale.exception
    assert rt.store.scalar("SELECT COUNT(*) FROM commands") == commands
    assert (rt.engine.params.profile, rt.engine.params.cutoff_delta) == ("relaxed", 0.02)
    # a value that differs from the live one is sent as before
    new_app().selectbox(key="w_profile").set_value("default").run()
    assert rt.store.scalar("SELECT COUNT(*) FROM commands") == commands + 1
    assert (rt.engine.params.profile, rt.engine.params.cutoff_delta) == ("default", 0.0)

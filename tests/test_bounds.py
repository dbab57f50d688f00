"""One source for every live-tunable setting's bounds (issue 23, item 2): core/bounds.py's table.

Before it the cutoff delta had four ranges (Settings ±0.50; commands, the sidebar and the Research page ±0.10) and
the sidebar clamped what it showed: with ``CUTOFF_DELTA=0.3`` the engine traded at +0.30 while the slider said
+0.10. The cooldown had three (Settings and commands 0–86,400 s, the sliders 30–600 s).
"""

from __future__ import annotations

import json
from datetime import UTC, date, timedelta

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from core.bounds import BOUNDS, BY_PARAM, BY_SETTING
from core.clock import SimClock, session_bounds
from core.config import LIVE_PARAM_LIMITS, ConfigError, Settings, load_settings, validate_param_changes
from core.research.replay import parse_sweep
from core.runtime import Runtime, shared_runtime, stop_all
from tests.helpers import new_app

NOON = session_bounds(date(2025, 3, 4))[0].astimezone(UTC) + timedelta(hours=2, minutes=30)


@pytest.fixture
def live(tmp_path, monkeypatch):
    """The app's runtime on a fresh database, the settings read from the environment as the app reads them."""

    def start(**env: str) -> Runtime:
        monkeypatch.setenv("DB_PATH", str(tmp_path / "app.db"))
        monkeypatch.setenv("ENGINE_JOBS", "0")
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        st.cache_resource.clear()
        stop_all()
        rt = shared_runtime(load_settings())
        rt.clock = SimClock(NOON)
        return rt

    yield start
    st.cache_resource.clear()
    stop_all()


def field_bounds(name: str) -> tuple[float, float]:
    meta = Settings.model_fields[name].metadata
    return (next(m.ge for m in meta if hasattr(m, "ge")), next(m.le for m in meta if hasattr(m, "le")))


def slider_proto(at: AppTest, key: str):
    return at.slider(key=key).proto


# ---------------------------------------------------------------- the bug: the sidebar showed another number
def test_the_sidebar_shows_the_cutoff_delta_the_engine_uses_and_moves_it(live):
    rt = live(CUTOFF_DELTA="0.3")
    assert rt.engine.params.cutoff_delta == pytest.approx(0.30)
    at = new_app()
    assert at.slider(key="w_cutoff_delta").value == pytest.approx(0.30)  # was +0.10: clamped to the old range
    assert not at.sidebar.warning  # inside the one range: nothing to warn about
    at.slider(key="w_cutoff_delta").set_value(0.05).run()
    assert not at.exception, at.exception
    assert rt.engine.params.cutoff_delta == pytest.approx(0.05)
    row = rt.store.one("SELECT old, new, source FROM param_audit WHERE name='cutoff_delta' ORDER BY id DESC LIMIT 1")
    assert (json.loads(row["old"]), json.loads(row["new"]), row["source"]) == (0.3, 0.05, "slider")
    assert new_app().slider(key="w_cutoff_delta").value == pytest.approx(0.05)


def test_a_cooldown_from_env_outside_the_old_slider_is_shown_as_it_is(live):
    rt = live(MIXER_COOLDOWN_S="900")
    assert rt.engine.params.cooldown_s == 900
    at = new_app()
    assert at.slider(key="w_cooldown_s").value == 900  # was 600
    at.slider(key="w_cooldown_s").set_value(1200).run()
    assert not at.exception, at.exception
    assert rt.engine.params.cooldown_s == 1200


def test_a_stored_value_outside_the_table_is_shown_with_a_warning_not_clamped(live):
    rt = live()
    # a params row written before the table (the engine's own check keeps it from ever using such a value)
    saved = {**rt.engine.params.as_dict(), "cutoff_delta": 0.9}
    rt.store.upsert("params", {"id": 1, "json": json.dumps(saved), "updated_at": None})
    rt.store.commit()
    at = new_app()
    s = slider_proto(at, "w_cutoff_delta")
    assert at.slider(key="w_cutoff_delta").value == pytest.approx(0.9)
    assert (s.min, s.max) == (pytest.approx(-0.5), pytest.approx(0.9))  # widened to hold it
    assert any("outside its range" in w.value and "+0.90" in w.value for w in at.sidebar.warning)


# ---------------------------------------------------------------- one table, read by every source
def test_the_table_is_the_only_source_of_every_range(live, monkeypatch):
    assert {b.param for b in BOUNDS} >= {"cutoff_delta", "cooldown_s", "direction_lock_s", "llm_min_signal_score"}
    for b in BOUNDS:
        assert field_bounds(b.setting) == (b.lo, b.hi), b.setting
        assert LIVE_PARAM_LIMITS[b.param] == (b.lo, b.hi), b.param
        for v in (b.lo, b.hi):  # both ends are inside, for every source
            assert validate_param_changes({b.param: v}) == {b.param: v}
            assert getattr(load_settings(**{b.setting: v}), b.setting) == v
            assert parse_sweep([f"{b.setting}={v}"]) == {b.setting: [v]}
    assert LIVE_PARAM_LIMITS.keys() == BY_PARAM.keys()

    monkeypatch.setattr("ui.research_view.today", lambda: date(2026, 6, 1))
    live(CUTOFF_DELTA="0.3")  # outside the old sliders' ±0.10: the Research page's slider raised on it
    at = new_app(timeout=240)
    for key, param in (("w_cutoff_delta", "cutoff_delta"), ("w_cooldown_s", "cooldown_s")):
        b, s = BY_PARAM[param], slider_proto(at, key)
        assert (s.min, s.max, s.step) == (pytest.approx(b.lo), pytest.approx(b.hi), pytest.approx(b.step)), key
        assert s.format == b.fmt
    at.switch_page("pages/research.py").run()
    assert not at.exception, at.exception
    for key, setting in (("r_delta", "cutoff_delta"), ("r_cooldown", "mixer_cooldown_s"), ("s_delta", "cutoff_delta")):
        b, s = BY_SETTING[setting], slider_proto(at, key)
        assert (s.min, s.max, s.step) == (pytest.approx(b.lo), pytest.approx(b.hi), pytest.approx(b.step)), key
    assert at.slider(key="r_delta").value == pytest.approx(0.3)  # the replay starts from the live value
    assert not at.warning
    cooldowns = at.multiselect(key="s_cooldowns")
    assert list(cooldowns.options) == [str(v) for v in BY_SETTING["mixer_cooldown_s"].sweep_values]


# ---------------------------------------------------------------- values outside the table are refused by name
@pytest.mark.parametrize(("name", "value", "env"), [("cooldown_s", 86_400, "MIXER_COOLDOWN_S"),
                                                    ("cooldown_s", 1801, "MIXER_COOLDOWN_S"),
                                                    ("direction_lock_s", 86_400, "DIRECTION_LOCK_S"),
                                                    ("cutoff_delta", 0.9, "CUTOFF_DELTA"),
                                                    ("cutoff_delta", -0.51, "CUTOFF_DELTA"),
                                                    ("llm_min_signal_score", 1.5, "LLM_MIN_SIGNAL_SCORE")])
def test_a_command_outside_the_table_is_refused_naming_the_setting(name, value, env):
    with pytest.raises(ConfigError) as e:
        validate_param_changes({name: value})
    assert str(e.value).startswith(f"{name}=") and env in str(e.value)
    b = BY_PARAM[name]
    assert b.range_text() in str(e.value)


@pytest.mark.parametrize(("item", "env"), [("cooldown=60,3600", "MIXER_COOLDOWN_S"),
                                           ("direction_lock_s=0:3600:1800", "DIRECTION_LOCK_S")])
def test_a_typed_sweep_grid_outside_the_table_is_refused_naming_the_setting(item, env):
    with pytest.raises(ValueError, match=env):
        parse_sweep([item])


def test_a_value_set_from_env_survives_the_default_profile_and_a_restart(live):
    rt = live(CUTOFF_DELTA="0.3")
    settings = rt.s
    rt.engine.set_params({"profile": "relaxed"}, who="t", now=rt.clock.now())
    rt.engine.set_params({"profile": "default"}, who="t", now=rt.clock.now())  # back to the configured +0.30
    assert rt.engine.params.cutoff_delta == pytest.approx(0.3)
    stop_all()
    again = Runtime(settings)
    assert again.engine.params.cutoff_delta == pytest.approx(0.3)
    again.stop()


def test_a_stored_parameter_outside_the_table_is_dropped_alone_and_the_row_rewritten(tmp_path):
    """A database from before the table (cooldown 3600 s) keeps its pause and mode; only the bad value goes back
    to the setting, and the row the pages read says so."""
    from core.engine import Engine
    from core.state.store import Store
    from core.venues.sim.synthetic import SyntheticMarket

    s = load_settings(mixer_cooldown_s=240)
    db = str(tmp_path / "old.db")
    store = Store(db)
    saved = {"cutoff_delta": -0.05, "cooldown_s": 3600, "direction_lock_s": 90, "llm_min_signal_score": 0.7,
             "reserve_fallback": True, "auto_mode": True, "paused": True, "profile": "default",
             "profile_sessions_left": None}
    store.upsert("params", {"id": 1, "json": json.dumps(saved), "updated_at": None})
    store.commit()
    e = Engine(s, store, SyntheticMarket(seed=1, universe=s.universe, anchor=date(2025, 3, 3)))
    assert (e.params.paused, e.params.auto_mode, e.params.cutoff_delta) == (True, True, -0.05)
    assert e.params.cooldown_s == 240  # the setting's, not 3600
    assert json.loads(store.one("SELECT json FROM params WHERE id=1")["json"])["cooldown_s"] == 240

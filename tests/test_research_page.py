"""The Research page under AppTest: a short replay compared with the current settings, and a sweep heat map."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from core.config import load_settings
from core.research.replay import grid_cells, parse_sweep, run_replay
from core.runtime import stop_all

APP = str(Path(__file__).resolve().parents[1] / "app.py")


@pytest.fixture
def app(tmp_path, monkeypatch):
    monkeypatch.setenv("DB_PATH", str(tmp_path / "r.db"))
    monkeypatch.setenv("ENGINE_JOBS", "0")
    st.cache_resource.clear()
    stop_all()
    at = AppTest.from_file(APP, default_timeout=240)
    at.run()
    at.switch_page("app_pages/research.py").run()
    assert not at.exception, at.exception
    yield at
    st.cache_resource.clear()
    stop_all()


def test_replay_shows_metrics_compared_with_current_settings(app):
    at = app
    at.number_input(key="r_days").set_value(1)
    at.number_input(key="r_seed").set_value(3)
    at.slider(key="r_delta").set_value(-0.05)
    next(b for b in at.get("form_submit_button") if "compare" in b.proto.label).click().run()
    assert not at.exception, at.exception
    table = next(d.value for d in at.dataframe if "this run" in d.value.columns)
    row = table.set_index("metric")
    # the page's numbers are the engine's: the same replay run here gives the same trade count
    ref = run_replay(load_settings(db_path=":memory:", auto_mode=True, cutoff_delta=-0.05, seed=3), days=1, seed=3,
                     start=date(2025, 3, 3))
    assert row.loc["trades", "this run"] == ref.stats["metrics"]["trades"]
    assert row.loc["trades", "delta"] == row.loc["trades", "this run"] - row.loc["trades", "current settings"]
    charts = [c.proto.spec for c in at.get("plotly_chart")]
    equity = json.loads(next(s for s in charts if "Equity" in s))
    assert {t["name"] for t in equity["data"]} == {"current settings", "this run"}


def test_replays_store_the_summary_log_unless_every_row_is_asked_for(app, monkeypatch):
    import core.research.replay

    real, asked = core.research.replay.run_replay, []

    def spy(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        asked.append(kwargs.get("decisions"))
        return real(*args, **kwargs)

    monkeypatch.setattr(core.research.replay, "run_replay", spy)  # the page imports it from the module on each run
    at = app
    at.number_input(key="r_days").set_value(1)
    at.number_input(key="r_seed").set_value(3)
    submit = next(b for b in at.get("form_submit_button") if "compare" in b.proto.label)
    submit.click().run()
    assert not at.exception, at.exception
    summary = next(d.value for d in at.dataframe if "this run" in d.value.columns)
    assert asked == ["summary", "summary"]
    box = at.checkbox(key="r_full_decisions")
    assert box.label == "Store every decision row (slower)" and box.value is False
    box.check()
    next(b for b in at.get("form_submit_button") if "compare" in b.proto.label).click().run()
    assert not at.exception, at.exception
    assert asked[2:] == ["full", "full"]
    full = next(d.value for d in at.dataframe if "this run" in d.value.columns)
    assert full.equals(summary)  # the same figures from either form


def test_sweep_renders_a_heat_map_of_the_grid(app):
    at = app
    at.slider(key="s_delta").set_value((-0.02, 0.02))
    at.number_input(key="s_step").set_value(0.02)
    at.multiselect(key="s_cooldowns").set_value([60, 300])
    at.number_input(key="s_days").set_value(1)
    at.number_input(key="s_workers").set_value(1)
    next(b for b in at.get("form_submit_button") if "sweep" in b.proto.label).click().run()
    assert not at.exception, at.exception
    spec = json.loads(next(c.proto.spec for c in at.get("plotly_chart") if "heatmap" in c.proto.spec))
    hm = spec["data"][0]
    assert hm["x"] == ["-0.02", "+0.00", "+0.02"] and hm["y"] == ["60", "300"]
    assert hm["z"]["shape"] == "2, 3"  # plotly 7 ships arrays as typed binary with their shape
    table = next(d.value for d in at.dataframe if "mixer_cooldown_s" in d.value.columns)
    assert len(table) == 6 and set(table["cutoff_delta"]) == {-0.02, 0.0, 0.02}


def test_parse_sweep_ranges_and_lists():
    g = parse_sweep(["cutoff_delta=-0.05:0.05:0.05", "cooldown=60,120"])
    assert g == {"cutoff_delta": [-0.05, 0.0, 0.05], "mixer_cooldown_s": ["60", "120"]}
    assert len(grid_cells(g)) == 6
    for bad in (["x"], ["a=1:0:1"], ["a=1:2:0"], ["a=1", "b=2", "c=3"]):
        with pytest.raises(ValueError):
            parse_sweep(bad)


def test_a_year_of_sessions_can_be_asked_for_and_no_more(app):
    """Replays and sweeps take up to 260 sessions (a year): the inputs' own bounds (the browser refuses more)."""
    at = app
    for key in ("r_days", "s_days"):
        box = at.number_input(key=key)
        assert (box.min, box.max) == (1, 260)

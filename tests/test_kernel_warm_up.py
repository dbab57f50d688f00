"""The app prepares the research kernel in the background at start (once per server process, off with
RESEARCH_WARM_UP=0), and a replay finds it ready."""

from __future__ import annotations

import pytest


def test_the_warm_up_runs_once_in_the_background(monkeypatch):
    import ui.state as state
    from core.research import warm

    calls = []
    monkeypatch.setattr(warm, "warm_up", lambda: calls.append(1) or 0.0)
    monkeypatch.setattr(state, "_WARM_UP", [])
    monkeypatch.setenv("RESEARCH_WARM_UP", "0")
    assert state.start_research_warm_up() is None and calls == []  # switched off
    monkeypatch.setenv("RESEARCH_WARM_UP", "1")
    t = state.start_research_warm_up()
    assert t is not None and t.daemon and t.name == "research-warm-up"
    t.join(timeout=60)
    assert calls == [1]
    assert state.start_research_warm_up() is None and calls == [1]  # once per process


def test_a_failed_warm_up_never_stops_the_app(monkeypatch, caplog):
    import ui.state as state
    from core.research import warm

    def broken() -> float:
        raise ValueError("bad .env value")

    monkeypatch.setattr(warm, "warm_up", broken)
    monkeypatch.setattr(state, "_WARM_UP", [])
    monkeypatch.setenv("RESEARCH_WARM_UP", "1")
    t = state.start_research_warm_up()
    t.join(timeout=60)
    assert "research engine warm-up failed" in caplog.text


@pytest.mark.parametrize("ready", [True, False])
def test_the_research_page_waits_for_the_kernel_only_when_it_is_not_ready(monkeypatch, ready):
    from core.research import warm
    from ui import research_view

    calls = []
    monkeypatch.setattr(warm, "kernel_ready", lambda: ready)
    monkeypatch.setattr(warm, "warm_up", lambda: calls.append(1) or 0.0)
    research_view.prepare_research_engine()
    assert calls == ([] if ready else [1])


def test_warm_up_leaves_the_kernel_ready():
    from core.research import warm

    warm.warm_up()
    assert warm.kernel_ready()

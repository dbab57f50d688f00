"""The runtime: simulated session clock, one engine per database, APScheduler jobs, guarded failures."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from datetime import date, datetime, timedelta

import pytest

from core.clock import NY, UTC, SimClock, is_rth, session_bounds
from core.config import load_settings
from core.runtime import (
    EngineLockedError,
    Runtime,
    SimSessionClock,
    active_runtime,
    default_sim_start,
    scheduler_threads,
    shared_runtime,
    stop_all,
)

FIRST = "2025-03-10"  # the simulated market's first session: never today's date (tests pass on any day)


class FakeWall:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def ny(y, m, d, hh, mm):  # noqa: ANN001, ANN202
    return datetime(y, m, d, hh, mm, tzinfo=NY).astimezone(UTC)


def test_sim_clock_runs_speed_times_wall_inside_sessions():
    wall = FakeWall()
    clock = SimSessionClock(ny(2025, 3, 7, 15, 58), speed=60, wall=wall)  # Friday
    wall.t += 60  # one wall minute = one market hour... but the session closes at 16:00
    assert clock.now() == session_bounds(date(2025, 3, 10))[0].astimezone(UTC)  # Monday's open (DST began)
    assert clock.now().astimezone(NY).strftime("%H:%M") == "09:30"
    wall.t += 30
    assert clock.now() == ny(2025, 3, 10, 10, 0)
    clock.set_speed(1)
    wall.t += 30
    assert clock.now() == ny(2025, 3, 10, 10, 0) + timedelta(seconds=30)


def test_sim_clock_skips_holidays_and_early_closes():
    wall = FakeWall()
    clock = SimSessionClock(ny(2025, 11, 28, 12, 59), speed=60, wall=wall)  # day after Thanksgiving, 13:00 close
    wall.t += 2
    assert clock.now() == ny(2025, 12, 1, 9, 30)
    # a start outside the session moves to the next open
    night = SimSessionClock(ny(2025, 12, 24, 20, 0), speed=1, wall=wall)
    assert night.now() == ny(2025, 12, 26, 9, 30)
    with pytest.raises(ValueError):
        SimSessionClock(ny(2025, 12, 26, 10, 0), speed=0)


def test_sim_clock_is_monotonic_under_many_reads():
    wall = FakeWall()
    clock = SimSessionClock(ny(2025, 3, 3, 9, 31), speed=37, wall=wall)
    last = clock.now()
    for _ in range(2000):
        wall.t += 0.731
        now = clock.now()
        assert now >= last and is_rth(now)
        last = now


def test_default_start_is_previous_session_with_a_warmup_day():
    anchor, start = default_sim_start(date(2025, 3, 10))  # a Monday
    assert anchor == date(2025, 3, 6) and start == ny(2025, 3, 7, 9, 31)


def test_sim_start_fixes_the_first_session_whatever_today_is(tmp_path):
    # a Saturday moves to Monday; the anchor (warm-up day) is the Friday before
    assert default_sim_start(date(2031, 7, 4), date(2025, 3, 8)) == (date(2025, 3, 7), ny(2025, 3, 10, 9, 31))
    # a holiday (Thanksgiving 2026) moves to the half day after it
    assert default_sim_start(date(2024, 1, 1), date(2026, 11, 26)) == (date(2026, 11, 25), ny(2026, 11, 27, 9, 31))
    for today in (date(2026, 11, 28), date(2027, 7, 5), date(2027, 12, 31)):
        rt = Runtime(load_settings(db_path=str(tmp_path / f"{today}.db"), engine_jobs=False, sim_start=FIRST),
                     today=today)
        try:
            assert rt.clock.now() >= ny(2025, 3, 10, 9, 31)
            assert rt.clock.now() < ny(2025, 3, 10, 9, 32)
            assert rt.store.get_meta("sim_anchor") == "2025-03-07"
        finally:
            rt.stop()


def test_one_engine_per_database_in_this_and_another_process(tmp_path):
    db = tmp_path / "one.db"
    s = load_settings(db_path=str(db), engine_jobs=False, sim_start=FIRST)
    first = shared_runtime(s)
    try:
        assert shared_runtime(s) is first and active_runtime(str(db)) is first
        with pytest.raises(EngineLockedError, match="already running"):
            Runtime(s)
        code = textwrap.dedent(f"""
            from core.config import load_settings
            from core.runtime import Runtime, EngineLockedError
            try:
                Runtime(load_settings(db_path={str(db)!r}, engine_jobs=False))
                print("started")
            except EngineLockedError as e:
                print("locked")
        """)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                             cwd=str(__import__("pathlib").Path(__file__).resolve().parents[1]))
        assert out.stdout.strip() == "locked", out.stderr
    finally:
        stop_all()
    again = Runtime(s)  # the lock is released on stop
    again.stop()


def test_scheduler_runs_every_job_on_one_thread_and_restart_resumes_the_market(tmp_path):
    s = load_settings(db_path=str(tmp_path / "jobs.db"), sim_speed=600, engine_jobs=True, auto_mode=True,
                      sim_start=FIRST)
    before = len(scheduler_threads())
    rt = shared_runtime(s)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            st = rt.status()
            if all(j["runs"] > 0 for j in st["jobs"].values()) and rt.store.scalar(
                    "SELECT COUNT(*) FROM signals WHERE decision != 'skipped'"):
                break
            time.sleep(0.2)
        st = rt.status()
        assert {n for n, j in st["jobs"].items() if j["runs"] > 0} == {"tick", "stop_checks", "kpi_snapshot",
                                                                       "session_events"}
        assert st["errors"] == 0 and st["running"]
        assert len(scheduler_threads()) == before + 1
        assert rt.store.scalar("SELECT COUNT(*) FROM kpi_snapshots") >= 1
        assert rt.store.scalar("SELECT COUNT(*) FROM notifications WHERE text LIKE 'daily briefing%'") >= 1
        assert rt.store.scalar("SELECT COUNT(*) FROM day_state") >= 1
    finally:
        stop_all()
    assert len(scheduler_threads()) == before
    stopped_at = datetime.fromisoformat(rt_meta(tmp_path / "jobs.db", "sim_clock"))
    again = Runtime(load_settings(db_path=str(tmp_path / "jobs.db"), engine_jobs=False, sim_speed=1))
    try:
        resumed = again.clock.now()
        assert stopped_at <= resumed < stopped_at + timedelta(seconds=5)
    finally:
        again.stop()


def rt_meta(db, key):  # noqa: ANN001, ANN201
    import sqlite3

    con = sqlite3.connect(str(db))
    try:
        return con.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()[0]
    finally:
        con.close()


def test_a_failing_job_is_counted_backed_off_and_recorded(tmp_path, monkeypatch):
    rt = Runtime(load_settings(db_path=str(tmp_path / "f.db"), engine_jobs=False, sim_start=FIRST))
    try:
        rt.jobs["tick"] = __import__("core.runtime", fromlist=["JobStatus"]).JobStatus("tick", 1.0)

        def boom(now):  # noqa: ANN001, ANN202
            raise RuntimeError("broker said 500")

        monkeypatch.setattr(rt.engine, "tick", boom)
        rt._guarded("tick", rt.run_tick)
        st = rt.jobs["tick"]
        assert st.errors == 1 and st.consecutive_errors == 1 and "broker said 500" in st.last_error
        assert st.skip_until > time.monotonic()
        rt._guarded("tick", rt.run_tick)  # inside the back-off: not run again
        assert st.errors == 1
        st.skip_until = 0
        rt._guarded("tick", rt.run_tick)
        assert st.errors == 2 and st.consecutive_errors == 2
        assert rt.store.scalar("SELECT COUNT(*) FROM notifications WHERE text LIKE 'job tick: RuntimeError%'") == 2
        monkeypatch.undo()
        st.skip_until = 0
        rt._guarded("tick", rt.run_tick)
        assert st.consecutive_errors == 0 and st.errors == 2
    finally:
        rt.stop()


def test_quiet_market_message_once_per_hour_without_actionable_signals(tmp_path):
    rt = Runtime(load_settings(db_path=str(tmp_path / "q.db"), engine_jobs=False, cutoff_open=0.99,
                               cutoff_midday=0.99, cutoff_close=0.99, seed=3), today=date(2025, 3, 5))
    try:
        rt.clock = SimClock(ny(2025, 3, 4, 9, 31))
        t = rt.clock.now()
        end = ny(2025, 3, 4, 12, 0)
        while t < end:
            t += timedelta(seconds=30)
            rt.clock.set(t)
            rt.run_tick()
            rt.run_session_events()
        quiet = rt.store.query("SELECT ts, text FROM notifications WHERE text LIKE 'quiet market%' ORDER BY id")
        assert rt.store.scalar("SELECT COUNT(*) FROM signals WHERE decision='actionable'") == 0
        # first after 60 min of session, then at most once per 60 min: 10:30-ish and 11:30-ish
        assert len(quiet) == 2, quiet
        assert "below_cutoff" in quiet[0]["text"]
        first = datetime.fromisoformat(quiet[0]["ts"]).astimezone(NY)
        assert (first.hour, first.minute) == (10, 30)
        briefings = rt.store.scalar("SELECT COUNT(*) FROM notifications WHERE text LIKE 'daily briefing 2025-03-04%'")
        assert briefings == 1
    finally:
        rt.stop()


def test_commands_from_another_connection_apply_on_the_next_tick(tmp_path):
    from core.state.store import Store

    rt = Runtime(load_settings(db_path=str(tmp_path / "c.db"), engine_jobs=False, sim_start=FIRST))
    try:
        rt.clock = SimClock(ny(2025, 3, 4, 10, 0))
        other = Store(str(tmp_path / "c.db"))  # e.g. a viewer process
        other.send_command("set_params", {"cutoff_delta": 0.07}, who="viewer", now=rt.clock.now())
        other.send_command("set_params", {"cutoff_delta": 9}, who="viewer", now=rt.clock.now())
        other.close()
        assert rt.engine.params.cutoff_delta == 0.0
        rt.run_tick()
        assert rt.engine.params.cutoff_delta == 0.07
        rows = rt.store.query("SELECT status, result FROM commands ORDER BY id")
        assert rows[0]["status"] == "done"
        assert rows[1]["status"] == "failed" and "cutoff_delta" in rows[1]["result"]
    finally:
        rt.stop()

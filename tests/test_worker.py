"""``python -m core.worker``: a headless engine another process (the app) attaches to through SQLite."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from core.config import load_settings
from core.runtime import EngineLockedError, Runtime
from core.state.store import Store

ROOT = Path(__file__).resolve().parents[1]


def wait_for(check, timeout_s: float = 60.0):  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


def test_the_worker_runs_the_engine_and_takes_commands_from_another_process(tmp_path):
    db = tmp_path / "worker.db"
    env = {**os.environ, "DB_PATH": str(db), "SIM_SPEED": "120", "AUTO_MODE": "1", "SEED": "5",
           "SIM_START": "2025-03-10"}
    env.pop("REDIS_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "core.worker", "--status-every", "1"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def market_time() -> datetime | None:
            """The worker's market time once its ticks are writing decisions (the file and its tables may
            exist before its schema and first tick do: anything short of that is "not yet")."""
            if not db.exists():
                return None
            try:
                st = Store(db, readonly=True)
            except sqlite3.Error:
                return None
            try:
                if not st.scalar("SELECT COUNT(*) FROM signals"):
                    return None
                ts = st.scalar("SELECT ts FROM heartbeat WHERE name='tick'")
                return datetime.fromisoformat(ts) if ts else None
            except sqlite3.OperationalError:  # no such table yet
                return None
            finally:
                st.close()

        now = wait_for(market_time)  # the worker's ticks are writing
        with pytest.raises(EngineLockedError):  # the app on the same database attaches instead of trading twice
            Runtime(load_settings(db_path=str(db), engine_jobs=False))
        writer = Store(db)
        # stamped with the engine's market time, as the app's pages do (ui.state.AppContext.now)
        cid = writer.send_command("set_params", {"cutoff_delta": 0.03}, who="ui:test", now=now)
        writer.close()
        reader = Store(db, readonly=True)
        wait_for(lambda: reader.scalar("SELECT status FROM commands WHERE id=?", (cid,)) == "done")
        assert json.loads(reader.scalar("SELECT json FROM params WHERE id=1"))["cutoff_delta"] == 0.03
        assert reader.scalar("SELECT who FROM param_audit WHERE name='cutoff_delta'") == "ui:test"
        reader.close()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out
        assert "worker stopped" in out and "Traceback" not in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    rt = Runtime(load_settings(db_path=str(db), engine_jobs=False))  # the lock was released
    rt.stop()


def test_a_bad_setting_stops_the_worker_with_a_clear_message(tmp_path):
    env = {**os.environ, "DB_PATH": str(tmp_path / "x.db"), "TIER_A_TOKENS": "6  # Tier A"}
    res = subprocess.run([sys.executable, "-m", "core.worker"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 2
    assert "TIER_A_TOKENS" in res.stderr and "inline comment" in res.stderr

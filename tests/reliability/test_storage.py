"""Storage faults: a full disk or a read-only database stops trading with a clear message (nothing is sent
to the broker that could not be recorded first) and trading resumes by itself when writes work again; the
UI's readers never meet "database is locked" while the engine writes at full replay speed."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from core import views
from core.config import load_settings
from core.metrics import kpi
from core.state.store import Store
from tests.test_alpaca import drive, fake, ny, runtime, settings_for  # noqa: F401  (fake is a fixture)

ROOT = Path(__file__).resolve().parents[2]


def _fail_writes(conn: sqlite3.Connection, how: str) -> None:
    if how == "full":  # SQLite's own cap on the file size: inserts get "database or disk is full"
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")
    else:
        conn.execute("PRAGMA query_only = 1")  # every write: "attempt to write a readonly database"


def _heal(conn: sqlite3.Connection, how: str) -> None:
    conn.execute("PRAGMA max_page_count = 1073741823" if how == "full" else "PRAGMA query_only = 0")


@pytest.mark.parametrize("how", ["full", "read-only"])
def test_an_unwritable_database_stops_trading_and_resumes(tmp_path, fake, how):  # noqa: F811
    rt = runtime(settings_for(tmp_path, fake, auto_mode=True, name=f"{how}.db"), ny(9, 45))
    drive(rt, fake, ny(10, 30))
    assert fake.order_posts > 0  # it was trading
    posts, signals = fake.order_posts, rt.store.scalar("SELECT COUNT(*) FROM signals")
    _fail_writes(rt.store.conn, how)
    reports = []
    t = rt.clock.now()
    for _ in range(120):  # an hour of market time
        t += timedelta(seconds=30)
        rt.clock.set(t)
        fake.set_time(t)
        reports.append(rt.run_tick())
    assert all(r.storage_error for r in reports)
    assert ("full" in reports[0].storage_error) if how == "full" else ("readonly" in reports[0].storage_error)
    if how == "read-only":
        assert fake.order_posts == posts  # no write can happen, so no order leaves
    # (a full disk still takes writes that fit in free pages: an order may leave after its intent was stored)
    status = rt.status()
    assert status["storage_error"] == reports[-1].storage_error
    _heal(rt.store.conn, how)
    drive(rt, fake, ny(12, 0))
    assert rt.engine.storage_error is None and rt.status()["storage_error"] is None
    assert rt.store.scalar("SELECT COUNT(*) FROM signals") > signals  # deciding again
    assert rt.store.scalar("SELECT COUNT(*) FROM notifications WHERE text LIKE 'database writable again%'") == 1
    # nothing was traded blind: every order at the broker is in our records, with its intent
    at_broker = {r["client_order_id"] for r in fake.sim_store.query(
        "SELECT client_order_id FROM sim_orders WHERE parent_id IS NULL")}
    ours = {r["client_order_id"]: r["intent_id"]
            for r in rt.store.query("SELECT client_order_id, intent_id FROM orders")}
    assert at_broker and at_broker <= set(ours)
    intents = {r["id"] for r in rt.store.query("SELECT id FROM intents")}
    assert all(ours[c] in intents for c in at_broker)
    rt.stop()


def test_readers_never_see_database_is_locked_while_a_replay_writes(tmp_path):
    db = tmp_path / "busy.db"
    writer = subprocess.Popen(
        [sys.executable, "-m", "core.research", "--days", "250", "--seed", "4", "--db", str(db), "--start",
         "2025-03-03", "--auto"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    settings = load_settings()
    reads, errors = 0, []
    try:
        # 25 s of reading while the replay writes at full speed: some 25 of its batch commits (one a second), and the
        # reader and the writer hold both cores the whole time (a minute cost the suite as much again)
        deadline = time.monotonic() + 25
        while not db.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        store = None
        while writer.poll() is None and time.monotonic() < deadline:
            try:
                if store is None:
                    store = Store(db, readonly=True)
                views.latest_by_ticker(store)
                views.decision_stream(store, 200)
                views.suppression_counts(store)
                now = store.scalar("SELECT MAX(ts) FROM signals")
                if now:
                    end = datetime.fromisoformat(now)
                    kpi.kpi_report(store, settings, end - timedelta(hours=1), end)
                reads += 1
            except sqlite3.OperationalError as e:
                if "no such table" in str(e):  # the writer has not created the schema yet
                    continue
                errors.append(str(e))
        still_writing = writer.poll() is None
        writer.kill()  # the replay was only the load
        out, _ = writer.communicate(timeout=30)
        finished = not still_writing and writer.returncode == 0
    finally:
        if writer.poll() is None:
            writer.kill()
    # the writer was busy the whole time, or finished the 250 sessions within it: it did not crash early
    assert still_writing or finished, out
    assert reads > 100  # the readers really overlapped the writer all along
    assert errors == []

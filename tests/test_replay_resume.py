"""A replay killed with SIGKILL at any point resumes to the same database as an uninterrupted run.

The replay writes its journal in batches (``core.research.replay.FLUSH_EVERY`` ticks per transaction). A kill loses
the batch in flight; the resumed run restarts from the last committed cursor with the state it committed
(book, TTL keys, token buckets and their counts, the stop-check and snapshot cadence) and must end with every
table equal, row for row, to a run that was never interrupted.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from core.config import load_settings
from core.research.replay import FLUSH_EVERY, run_replay
from tests.golden_replays import tables  # every table, rows sorted (the replay cursor is one of them)

ROOT = Path(__file__).resolve().parents[1]
START = date(2025, 3, 3)
DAYS, SEED = 2, 21

CHILD = """
import os, signal, sys
from datetime import date
from core.config import load_settings
from core.research.replay import run_replay
from core.state.store import Store

db, how, at, days, seed, start, decisions = sys.argv[1:8]
at, days, seed = int(at), int(days), int(seed)
if how == "flush":  # die inside the at-th batch commit, before it reaches the disk
    flushes = []
    real = Store.flush
    def flush(self):
        flushes.append(1)
        if len(flushes) == at:
            os.kill(os.getpid(), signal.SIGKILL)
        real(self)
    Store.flush = flush
    progress = None
else:  # die between two ticks, after ``at`` ticks (mid-batch)
    def progress(done, total):
        if done >= at:
            os.kill(os.getpid(), signal.SIGKILL)
run_replay(load_settings(auto_mode=True), days=days, seed=seed, start=date.fromisoformat(start), db_path=db,
           progress=progress, decisions=decisions)
"""




@pytest.mark.parametrize(("how", "at", "decisions"), [
    ("tick", 700, "summary"),  # mid-batch: the ticks after the first flush are lost and replayed
    ("tick", 1250, "summary"),  # day 2: a position open across the kill (its MAE/MFE cadence must resume)
    ("tick", 1300, "full"),  # every decision as a row (the live form)
    ("flush", 2, "summary"),  # inside the second batch's commit
    ("flush", 2, "full"),
])
def test_a_killed_replay_resumes_to_the_same_database(tmp_path, how, at, decisions):
    assert at > FLUSH_EVERY or how == "flush"  # the kill lands after a committed batch
    s = load_settings(auto_mode=True)
    ref = str(tmp_path / "ref.db")
    run_replay(s, days=DAYS, seed=SEED, start=START, db_path=ref, decisions=decisions).store.close()
    db = str(tmp_path / "killed.db")
    child = subprocess.run([sys.executable, "-c", CHILD, db, how, str(at), str(DAYS), str(SEED),
                            START.isoformat(), decisions], cwd=ROOT, capture_output=True, text=True, timeout=300,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    con = sqlite3.connect(db)
    cursor = con.execute("SELECT value FROM meta WHERE key='replay_cursor'").fetchone()
    con.close()
    assert cursor is not None  # a batch was committed before the kill: the resume starts from it
    res = run_replay(s, days=DAYS, seed=SEED, start=START, db_path=db, decisions=decisions)
    res.store.close()
    want, got = tables(ref), tables(db)
    assert got.keys() == want.keys()
    assert (len(want["signal_counts"]) > 1000) == (decisions == "summary")  # the form asked for
    differing = [n for n in want if got[n] != want[n]]
    assert differing == [], {n: (len(want[n]), len(got[n])) for n in differing}

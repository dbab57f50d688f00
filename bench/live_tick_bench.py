"""Live tick benchmark (issue 15): does a year of history slow the engine's tick?

The app's runtime (default settings and strategy, simulated market and broker) starts on an empty database
and on one holding a year of history (tests/bigdb.py: a replay multiplied to ~886k decisions), then runs the
tick job every 5 s of market time through the next session's first hour. Each run works on a copy, so
``--db`` can keep the year's database for the next run. A benchmark, not a test: `make bench`. The last line
is exactly `tick_p50_ms=<empty>/<year> tick_p99_ms=<empty>/<year> startup_ms=<empty>/<year>`.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from core.clock import SimClock  # noqa: E402
from core.config import load_settings  # noqa: E402
from core.runtime import Runtime  # noqa: E402
from tests.bigdb import build_year_db, continue_market  # noqa: E402

TICK_S = 5


def sim_clock(db: str) -> datetime:
    con = sqlite3.connect(db)
    try:
        return datetime.fromisoformat(con.execute("SELECT value FROM meta WHERE key='sim_clock'").fetchone()[0])
    finally:
        con.close()


def run(db: str, ticks: int, llm: bool) -> dict[str, float]:
    start = sim_clock(db)
    # --llm: the LLM gate and mixer on (calls are only queued: no job makes them)
    extra = {"llm_enabled": True, "llm_base_url": "http://127.0.0.1:9/v1"} if llm else {}
    t0 = time.perf_counter()
    rt = Runtime(load_settings(db_path=db, engine_jobs=False, **extra))
    startup = time.perf_counter() - t0
    rt.clock = clock = SimClock(start)
    times, busy, decisions = [], [], 0
    try:
        for i in range(ticks):
            clock.set(start + timedelta(seconds=TICK_S * i))
            t0 = time.perf_counter()
            rep = rt.run_tick()
            times.append(time.perf_counter() - t0)
            if i and rep.processed:
                busy.append(times[-1])  # a tick that scored tickers (every 30 s), not only the snapshots
            decisions += rep.processed
    finally:
        rt.stop()
    rest = sorted(times[1:])
    return {"startup_ms": startup * 1000, "first_tick_ms": times[0] * 1000,
            "tick_p50_ms": statistics.median(rest) * 1000, "tick_p99_ms": rest[int(0.99 * (len(rest) - 1))] * 1000,
            "tick_max_ms": rest[-1] * 1000,
            "scoring_tick_p50_ms": statistics.median(busy) * 1000 if busy else float("nan"), "scored": decisions}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", help="the year's database: reused if it exists, else built there")
    ap.add_argument("--ticks", type=int, default=720, help="ticks per database (5 s of market time each)")
    ap.add_argument("--llm", action="store_true", help="with the LLM gate and mixer (LLM_ENABLED=1)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        year = args.db or os.path.join(tmp, "year.db")
        if not os.path.exists(year):
            t0 = time.perf_counter()
            built = build_year_db(year)
            print(f"built {year} in {time.perf_counter() - t0:.1f}s: {built.counts['signals']} signals")
        work, empty = os.path.join(tmp, "work.db"), os.path.join(tmp, "empty.db")
        con = sqlite3.connect(year)
        con.execute("VACUUM INTO ?", (work,))  # the ticks write: the year's database stays as built
        con.close()
        warm = os.path.join(tmp, "warm.db")
        for db in (empty, warm):
            continue_market(db, sim_clock(work))
        run(warm, 12, args.llm)  # first-use imports and caches: not part of either start-up
        out = {}
        for name, db in (("empty", empty), ("year", work)):
            out[name] = run(db, args.ticks, args.llm)
            print(name, " ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}"
                                 for k, v in out[name].items()))
    print(" ".join(f"{k}={out['empty'][k]:.2f}/{out['year'][k]:.2f}" for k in ("tick_p50_ms", "tick_p99_ms",
                                                                             "startup_ms")))


if __name__ == "__main__":
    main()

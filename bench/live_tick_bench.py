"""Live tick benchmark (issue 15): does a year of history slow the engine's tick?

The app's runtime (default settings and strategy, simulated market and broker) starts on an empty database
and on one holding a year of history (tests/bigdb.py: a replay multiplied to ~886k decisions), then runs the
tick job every 5 s of market time through the next session's first hour. Each run works on a copy, so
``--db`` can keep the year's database for the next run. A benchmark, not a test: `make bench`. The last line
is exactly `tick_p50_ms=<empty>/<year> tick_p99_ms=<empty>/<year> startup_ms=<empty>/<year>`.

``--jobs`` (issue 27) measures the app's scheduled jobs instead: the runtime with its real APScheduler jobs at
SIM_SPEED=60 for ``--market-minutes`` (10) of simulated time, started 5 market minutes before a close so that a
session's last minutes and the next session's first ones are in it (the first tick of a session used to load the
day under the engine lock and overran the 0.25 s tick interval). Its last line is exactly
`longest_job=<name> longest_job_ms=<ms> interval_ms=<that job's interval> skipped=<APScheduler skips>`.
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


def jobs(market_minutes: float, speed: float = 60.0) -> dict[str, object]:
    """The longest run of any scheduled job, with its interval, and APScheduler's skipped runs (see the docstring)."""
    import logging
    from datetime import UTC

    from core.runtime import SimSessionClock

    skipped: list[str] = []

    class Skips(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "skipped" in record.getMessage():
                skipped.append(record.getMessage())

    logging.getLogger("apscheduler").addHandler(Skips())
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        rt = Runtime(load_settings(db_path=os.path.join(tmp, "jobs.db"), sim_speed=speed, auto_mode=True,
                                   sim_start=datetime(2025, 3, 10).date()))
        rt.clock = SimSessionClock(datetime(2025, 3, 10, 19, 55, tzinfo=UTC), speed)  # 15:55 New York
        longest: dict[str, float] = {}
        guarded = rt._guarded

        def timed(name: str, fn):  # type: ignore[no-untyped-def]
            t0 = time.perf_counter()
            guarded(name, fn)
            longest[name] = max(longest.get(name, 0.0), time.perf_counter() - t0)  # lock waits included

        rt._guarded = timed  # type: ignore[method-assign]
        rt.start()
        time.sleep(market_minutes * 60.0 / speed)
        rt.stop()
        name = max(longest, key=lambda k: longest[k])
        return {"longest_job": name, "longest_job_ms": round(longest[name] * 1000, 1),
                "interval_ms": round(rt.jobs[name].interval_s * 1000, 1), "skipped": len(skipped)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", help="the year's database: reused if it exists, else built there")
    ap.add_argument("--ticks", type=int, default=720, help="ticks per database (5 s of market time each)")
    ap.add_argument("--llm", action="store_true", help="with the LLM gate and mixer (LLM_ENABLED=1)")
    ap.add_argument("--jobs", action="store_true", help="the scheduled jobs at SIM_SPEED=60 (see the docstring)")
    ap.add_argument("--market-minutes", type=float, default=10.0, help="--jobs: simulated minutes to run")
    args = ap.parse_args()
    if args.jobs:
        print(" ".join(f"{k}={v}" for k, v in jobs(args.market_minutes).items()))
        return
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

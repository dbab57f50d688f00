"""Page benchmark (issue 17): how long a run of Trade history and Live signals takes on a long history.

The database is a year of decisions (tests/bigdb.py, ~886k rows, 98k equity snapshots) plus closed round trips
up to ``--trades`` (100,000 by default: trades, their orders and fills). The app runs under Streamlit's AppTest
with the real runtime on it (ENGINE_JOBS=0: no tick moves the figures between runs). For each page: the first
run after switching to it and a few reruns, in wall seconds (AppTest runs the script in this process, the
sidebar included). A benchmark, not a test. The last line is exactly
`history_s=<first>/<rerun> live_signals_s=<first>/<rerun>` (rerun: the median).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.bigdb import add_closed_trades, build_year_db  # noqa: E402

PAGES = ("history", "live_signals")


def build(path: str, trades: int) -> None:
    t0 = time.perf_counter()
    built = build_year_db(path)
    total = add_closed_trades(path, max(0, trades - built.counts["trades"]))
    print(f"built {path} in {time.perf_counter() - t0:.1f}s: {built.counts['signals']} decisions, "
          f"{built.counts['equity']} equity snapshots, {total} closed trades")


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(db: str, reruns: int) -> dict[str, tuple[float, list[float]]]:
    os.environ.update({"DB_PATH": db, "ENGINE_JOBS": "0", "SEED": "7"})
    from streamlit.testing.v1 import AppTest

    from core.runtime import stop_all

    at = AppTest.from_file(os.path.join(ROOT, "app.py"), default_timeout=300)
    try:
        at.run()  # the runtime starts (the database's lock, the engine's book): not a page's cost
        if at.exception:
            raise RuntimeError(at.exception)
        out = {}
        for name in PAGES:
            first = timed(lambda n=name: at.switch_page(f"pages/{n}.py").run())
            if at.exception:
                raise RuntimeError(f"{name}: {at.exception}")
            again = [timed(at.run) for _ in range(reruns)]
            out[name] = (first, again)
            print(f"{name}: first {first:.2f}s, reruns {' '.join(f'{t:.2f}' for t in again)}s")
        return out
    finally:
        stop_all()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", help="the database: reused if it exists, else built there")
    ap.add_argument("--trades", type=int, default=100_000, help="closed trades in the database")
    ap.add_argument("--reruns", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or os.path.join(tmp, "pages.db")
        if not os.path.exists(db):
            build(db, args.trades)
        work = os.path.join(tmp, "work.db")
        con = sqlite3.connect(db)
        con.execute("VACUUM INTO ?", (work,))  # the runtime writes (its meta, its book): the built file stays
        con.close()
        out = measure(work, args.reruns)
    print(" ".join(f"{n}_s={out[n][0]:.2f}/{statistics.median(out[n][1]):.2f}" for n in PAGES))


if __name__ == "__main__":
    main()

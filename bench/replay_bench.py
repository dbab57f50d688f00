"""Replay benchmark (issue 5): one year of the 13-symbol universe through the whole pipeline.

Fast mode (core/fastpath.py) over 252 sessions x 390 minutes with SQLite persistence on disk;
reference mode (every tick through Engine.tick) on a 5-session slice; parity compares the two
modes' trades on that slice. A benchmark, not a test: `make bench`. The last line is exactly
`bar_events_per_s=<int> reference_per_s=<int> speedup=<float> rss_mb=<int> parity=<ok|FAIL>`.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from datetime import date

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from core.config import load_settings  # noqa: E402
from core.research import run_replay  # noqa: E402

TRADES = ("SELECT symbol, kind, qty, entry_ts, entry_price, exit_ts, exit_price, pnl, exit_reason "
          "FROM trades ORDER BY id")


def timed(settings, days: int, seed: int, start: date, mode: str, db: str):  # noqa: ANN001, ANN201
    t0 = time.perf_counter()
    res = run_replay(settings, days=days, seed=seed, start=start, db_path=db, mode=mode)
    return res, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", type=int, default=252)
    ap.add_argument("--slice", type=int, default=5)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    settings = load_settings(auto_mode=True)
    start = date(2025, 1, 2)
    with tempfile.TemporaryDirectory() as tmp:
        fast, wall = timed(settings, args.days, args.seed, start, "fast", os.path.join(tmp, "year.db"))
        bars = fast.stats["bars"]
        print(f"fast: sessions={fast.stats['sessions']} bar_events={bars} wall_s={wall:.2f} "
              f"trades={fast.stats['trades']} pnl={fast.stats['pnl']}")
        fast.store.close()
        ref, ref_wall = timed(settings, args.slice, args.seed, start, "reference", os.path.join(tmp, "ref.db"))
        fslice, _ = timed(settings, args.slice, args.seed, start, "fast", os.path.join(tmp, "slice.db"))
        parity = ref.store.query(TRADES) == fslice.store.query(TRADES) and ref.stats["pnl"] == fslice.stats["pnl"]
        ref_rate = ref.stats["bars"] / ref_wall
        print(f"reference: sessions={args.slice} bar_events={ref.stats['bars']} wall_s={ref_wall:.2f} "
              f"trades={ref.stats['trades']}")
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    rate = bars / wall
    print(f"bar_events_per_s={int(rate)} reference_per_s={int(ref_rate)} speedup={rate / ref_rate:.2f} "
          f"rss_mb={int(rss_mb)} parity={'ok' if parity else 'FAIL'}")


if __name__ == "__main__":
    main()

"""Replay benchmark: 20 trading sessions of the full universe through the whole pipeline.

Prints bar-events per second (bars of 13 symbols replayed / wall seconds, SQLite
persistence included) and the peak RSS. A benchmark, not a test: run it by hand
or with `make bench`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from datetime import date

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from core.config import load_settings  # noqa: E402
from core.research import run_replay  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", type=int, default=20)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--auto", action="store_true", default=True)
    args = ap.parse_args()
    settings = load_settings(auto_mode=args.auto)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        res = run_replay(settings, days=args.days, seed=args.seed, start=date(2025, 3, 3),
                         db_path=os.path.join(tmp, "bench.db"))
        wall = time.perf_counter() - t0
        res.store.close()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    stats = res.stats
    print(json.dumps({k: stats[k] for k in ("bars", "signals", "actionable", "orders", "trades", "pnl")}))
    print(f"sessions={stats['sessions']} bar_events={stats['bars']} wall_s={wall:.2f} "
          f"bar_events_per_s={int(stats['bars'] / wall)} rss_mb={int(rss_mb)}")


if __name__ == "__main__":
    main()

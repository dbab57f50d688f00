"""The feed a replay prepares before its first tick, without the cache, cold (scored, then written) and warm (read
back): a year (252 sessions) of the default universe, seed 7, as ``run_replay`` makes it (``build_market``, the
sessions, the feed, ``core.research.feed_cache.preload``).

Each figure is a fresh process (nothing remembered in memory between runs), the calendar loaded before the clock
starts; the warm run also reads every array once (the pages a replay will touch). A benchmark, not a test.
The last line is exactly ``off_s=<float> cold_s=<float> warm_s=<float> warm_read_s=<float> entry_mb=<float>``
(medians of wall seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ONE = r"""
import json, resource, sys, time
from datetime import date
sys.path.insert(0, {root!r})
from core.clock import session_bounds, trading_sessions
from core.config import load_settings
from core.feed import MarketFeed
from core.research.feed_cache import preload
from core.research.replay import build_market, replay_days
from core.strategy import load_strategy

s = load_settings(feed_cache_dir={cache!r}, feed_cache_mb={mb})
start = date(2025, 1, 2)
[session_bounds(d) for d in trading_sessions(start, {days})]
t0, c0 = time.perf_counter(), time.process_time()
market = build_market(s, seed={seed}, start=start, bars_file=None, days={days})
feed = MarketFeed(market, load_strategy(s.strategy), s.universe.all_symbols)
what = preload(feed, replay_days(s, start, {days}, market), s)
t1 = time.perf_counter()
total = sum(float(abs(getattr(feed, n)).sum()) for n in ("open", "high", "low", "close", "volume"))
t2 = time.perf_counter()
print(json.dumps({{"what": what, "wall": t1 - t0, "cpu": time.process_time() - c0, "read": t2 - t1,
                  "rows": len(feed.ts), "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def once(cache: str, mb: int, days: int, seed: int) -> dict:
    code = ONE.format(root=ROOT, cache=cache, mb=mb, days=days, seed=seed)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=252)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    folder = tempfile.mkdtemp(prefix="feed-cache-bench-")
    runs: dict[str, list[dict]] = {"off": [], "cold": [], "warm": []}
    try:
        for _ in range(args.repeat):
            runs["off"].append(once(folder, 0, args.days, args.seed))
            shutil.rmtree(folder, ignore_errors=True)
            runs["cold"].append(once(folder, 2048, args.days, args.seed))
            runs["warm"].append(once(folder, 2048, args.days, args.seed))
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(folder) for f in fs) / 1e6
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    assert {r["what"] for r in runs["cold"]} == {"miss"} and {r["what"] for r in runs["warm"]} == {"hit"}
    med = {k: {f: statistics.median(r[f] for r in v) for f in ("wall", "cpu", "read", "rss_mb")}
           for k, v in runs.items()}
    print(f"{args.days} sessions, seed {args.seed}, {runs['off'][0]['rows']:,} minutes x 13 symbols; "
          f"medians of {args.repeat} fresh processes")
    for k, m in med.items():
        print(f"  {k:>4}: {m['wall']:.3f} s wall, {m['cpu']:.3f} s CPU, then every array read once "
              f"{m['read']:.3f} s; peak RSS {m['rss_mb']:.0f} MB")
    print(f"  entry on disk: {size:.1f} MB")
    print(f"off_s={med['off']['wall']:.3f} cold_s={med['cold']['wall']:.3f} warm_s={med['warm']['wall']:.3f} "
          f"warm_read_s={med['warm']['read']:.3f} entry_mb={size:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

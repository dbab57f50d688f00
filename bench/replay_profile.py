"""cProfile of a kernel replay (research path): where a replay's CPU goes outside the compiled ticks.

``python bench/replay_profile.py --days 21`` prints the top functions by cumulative and by own time, and writes the
raw profile to ``--out`` (default /tmp/replay.prof) for ``python -m pstats``. A tool, not a test.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import time
from datetime import date

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from core.clock import _calendar  # noqa: E402
from core.config import load_settings  # noqa: E402
from core.research.replay import run_replay  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", type=int, default=21)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--out", default="/tmp/replay.prof")
    args = ap.parse_args()
    settings = load_settings(auto_mode=True)
    _calendar()
    from core.research.warm import warm_up

    warm_up()  # the compiled kernel in this process before anything is measured
    with tempfile.TemporaryDirectory() as tmp:
        # the scored feed first (cached on disk), so the profile holds the replay only
        run_replay(settings, days=args.days, seed=args.seed, start=date(2025, 1, 2),
                   db_path=os.path.join(tmp, "warm.db"), stop_after_ticks=1).store.close()
        prof = cProfile.Profile(time.process_time)  # CPU seconds: the machine is shared, wall time is noise
        t0 = time.process_time()
        prof.enable()
        res = run_replay(settings, days=args.days, seed=args.seed, start=date(2025, 1, 2),
                         db_path=os.path.join(tmp, "prof.db"))
        prof.disable()
        cpu = time.process_time() - t0
        res.store.close()
    print(f"cpu_s={cpu:.2f} (profiled) bar_events={res.stats['bars']} handbacks={sum(res.handbacks.values())}")
    prof.dump_stats(args.out)
    st = pstats.Stats(args.out)
    st.sort_stats("cumulative").print_stats(args.top)
    st.sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()

"""Time to replay and compare one live session with a full decision log (issue 28; goal: under 2 s warm).

Runs a full simulated live session (tests/session_live.py: the real Runtime, ticks every 30 s, approvals, a
rejection, auto mode, two parameter changes, a close), then replays it ``--runs`` times and prints one line:
``session replay: <ticks> calls, <decisions> decisions, cold X s, warm Y s (best of N)``."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.research.session_replay import replay_session  # noqa: E402
from core.state.store import Store  # noqa: E402
from tests.session_live import DAY, full_session  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "live.db")
        full_session(db, args.seed)
        live = Store(db, readonly=True)
        times = []
        for _ in range(args.runs + 1):
            t0 = time.perf_counter()
            r = replay_session(live, DAY)
            times.append(time.perf_counter() - t0)
        live.close()
    print(f"session replay: {r.calls} calls, {r.matched['decisions']:,} decisions, {r.summary['differences']} "
          f"differences, cold {times[0]:.2f} s, warm {min(times[1:]):.2f} s (best of {args.runs})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

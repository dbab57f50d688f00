"""Trials per second of a 21-session search on 2 local processes (issue 29), and the study it leaves behind.

The synthetic market of seed 7 from 2025-03-03 (21 sessions), the default strategy, cutoff delta and cooldown
searched by Optuna's TPE sampler in batches of 4 with pruning (core.research.search). The time counts everything
a user waits for: scoring the bars once, spawning the worker processes for each batch, the replays and the
study's bookkeeping in SQLite. ``--db PATH --save``: keep the study and a saved run there (the README's screenshot,
bench/search_screens.py).

    .venv/bin/python bench/search_bench.py [--trials 16] [--db /tmp/search.db]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.clock import trading_sessions  # noqa: E402
from core.research import runs, search, sources, warm  # noqa: E402
from core.state.store import Store  # noqa: E402

START, SESSIONS = date(2025, 3, 3), 21
SPACE = ["cutoff_delta=-0.10:0.10", "mixer_cooldown_s=60:600"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--db", help="keep the study (and a saved run) in this database")
    args = ap.parse_args()
    warm.warm_up()  # the compiled kernel is ready before the clock starts, as after the app's warm-up
    sessions = trading_sessions(START, SESSIONS)
    source = sources.DataSource("synthetic", seed=7)
    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or str(Path(tmp) / "bench.db")
        t0 = time.perf_counter()
        out = search.run_search({"auto_mode": True}, search.parse_space(SPACE), n_trials=args.trials,
                                metric="total_return", sessions=sessions, seed=7, db_path=db, workers=args.workers,
                                source=source.as_dict())
        elapsed = time.perf_counter() - t0
        pruned = sum(1 for t in out["trials"] if t["state"] == "pruned")
        print(f"{out['ran']} trials ({pruned} pruned) of a {SESSIONS}-session search on {args.workers} processes in "
              f"{elapsed:.1f} s: {out['ran'] / elapsed:.2f} trials/s")
        print(out["odds"].get("verdict"))
        if args.db:
            store = Store(db)
            try:
                best = (out["best"] or {}).get("row") or {}
                runs.save_run(store, name=f"search {out['study']}: {out['tried']} trials", kind="search",
                              source=source.run_source(sessions),
                              params={"space": SPACE, "metric": "total_return"},
                              metrics={k: v for k, v in best.items() if k not in ("cutoff_delta", "mixer_cooldown_s")},
                              detail=out, created_at=datetime.now(UTC))
            finally:
                store.close()


if __name__ == "__main__":
    main()

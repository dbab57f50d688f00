"""Replay benchmark: one year of the 13-symbol universe through the one engine.

* research run: 252 sessions x 390 minutes through the compiled kernel (``core.research.fast``), decisions in the
  summary form (what the CLI, the Research page and sweeps store) or ``--decisions full``, SQLite on disk; the
  ticks it handed to ``Engine.tick``, by cause;
* reference: a slice of the same market with every tick through ``Engine.tick`` (``path="reference"``);
* parity: the slice through the kernel writes every table exactly as the reference does.

Also printed: where a tick's time goes (per-part CPU time, by wrapping the engine's parts with timers on the
slice), the fixed costs (market generation and scoring) and the peak RSS. A benchmark, not a test: `make bench`.
The last line is exactly
`bar_events_per_s=<int> reference_per_s=<int> speedup=<float> rss_mb=<int> parity=<ok|FAIL> decisions=<summary|full>
compile_s=<float>` (one line).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import tempfile
import time
from collections import defaultdict
from datetime import date
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from core.clock import _calendar  # noqa: E402
from core.config import load_settings  # noqa: E402
from core.research.replay import run_replay, session_ticks  # noqa: E402
from tests.golden_replays import tables  # noqa: E402  (every table, rows sorted)

# the engine's parts, as a reader finds them in core/engine/ (none nested in another); the rest of a tick is
# "other" (the account state is built inside the decisions and the baskets)
PARTS = {
    "broker sync + fills": ("SimBroker.sync", "FillLedger.ingest_fills", "OrderFlow.refresh_orders",
                            "OrderFlow.resolve_submitting"),
    "decisions (tickers)": ("DecisionChain.detect_bench_events", "DecisionChain.process_ticker"),
    "baskets": ("BasketRouting.route",),
    "protections": ("LiveParameters.run_protections",),
    "stops + snapshots": ("FillLedger.maybe_check_stops", "Snapshots.take"),
}


def timed(settings: Any, days: int, seed: int, start: date, db: str, decisions: str,
          path: str = "kernel") -> tuple[Any, float]:
    t0 = time.process_time()
    res = run_replay(settings, days=days, seed=seed, start=start, db_path=db, decisions=decisions, path=path)
    return res, time.process_time() - t0


def compile_seconds() -> tuple[float, str]:
    """Wall seconds to get the compiled kernel into this process (a cold cache compiles, a warm one loads)."""
    from core.research import kernel

    warm = kernel.CACHE_DIR.exists() and any(kernel.CACHE_DIR.rglob("*.nbi"))
    t0 = time.perf_counter()
    from core.research.warm import warm_up

    warm_up()
    return time.perf_counter() - t0, "warm" if warm else "cold"


def breakdown(settings: Any, days: int, seed: int, start: date, db: str) -> tuple[dict[str, float], int, float]:
    """CPU seconds per part of the tick over a replay of ``days`` (summary form), the tick count and the total;
    the journal's flushes are their own part."""
    from core.engine import Engine
    from core.engine.decide import DecisionChain
    from core.engine.ledger import FillLedger
    from core.engine.orders import OrderFlow
    from core.engine.params import LiveParameters
    from core.engine.routing import BasketRouting
    from core.engine.snapshots import Snapshots
    from core.state.store import Store
    from core.venues.sim.broker import SimBroker

    owners = {c.__name__: c for c in (SimBroker, FillLedger, OrderFlow, DecisionChain, BasketRouting, LiveParameters,
                                      Snapshots)}

    spent: dict[str, float] = defaultdict(float)
    ticks = [0]
    saved: list[tuple[Any, str, Any]] = []

    def wrap(owner: Any, name: str, part: str) -> None:
        real = getattr(owner, name)
        saved.append((owner, name, real))

        def timed_call(*a: Any, **k: Any) -> Any:
            t0 = time.process_time()
            try:
                return real(*a, **k)
            finally:
                spent[part] += time.process_time() - t0
        setattr(owner, name, timed_call)

    for part, names in PARTS.items():
        for name in names:
            owner, method = name.split(".", 1)
            wrap(owners[owner], method, part)
    wrap(Store, "flush", "journal flush")
    real_tick = Engine.tick

    def tick(self: Any, now: Any) -> Any:
        ticks[0] += 1
        return real_tick(self, now)
    Engine.tick = tick  # type: ignore[method-assign]
    try:
        t0 = time.process_time()
        run_replay(settings, days=days, seed=seed, start=start, db_path=db, decisions="summary", path="reference")
        total = time.process_time() - t0
    finally:
        Engine.tick = real_tick  # type: ignore[method-assign]
        for owner, name, real in saved:
            setattr(owner, name, real)
    return dict(spent), ticks[0], total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", type=int, default=252)
    ap.add_argument("--slice", type=int, default=5)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--decisions", choices=("summary", "full"), default="summary",
                    help="the form of the decision log of the year's run")
    args = ap.parse_args()
    settings = load_settings(auto_mode=True)
    start = date(2025, 1, 2)
    _calendar()  # built once per process (1990-2035), before anything is timed
    print(f"machine: {os.cpu_count()} cores, Python {platform.python_version()}, {platform.machine()}")
    compile_s, cache = compile_seconds()
    print(f"kernel: compile_s={compile_s:.2f} ({cache} cache)")
    with tempfile.TemporaryDirectory() as tmp:
        from core.feed import MarketFeed
        from core.research.replay import build_market, replay_days
        from core.strategy import load_strategy

        t0 = time.process_time()
        market = build_market(settings, seed=args.seed, start=start, bars_file=None, days=args.days)
        feed = MarketFeed(market, load_strategy(settings.strategy), settings.universe.all_symbols)
        feed.preload_sessions(replay_days(settings, start, args.days, market))
        fixed = time.process_time() - t0
        del feed, market
        year, cpu = timed(settings, args.days, args.seed, start, os.path.join(tmp, "year.db"), args.decisions)
        bars = year.stats["bars"]
        print(f"research: sessions={year.stats['sessions']} bar_events={bars} cpu_s={cpu:.2f} "
              f"(of which market generation and scoring {fixed:.2f}) trades={year.stats['trades']} "
              f"pnl_total={year.stats['pnl_total']} decisions={args.decisions}")
        from core.research.kernel import WHY_NAMES

        hb = year.handbacks
        ticks = sum(len(session_ticks(d)) for d in replay_days(settings, start, args.days, None))
        print(f"ticks={ticks}, handed to the engine: " + ", ".join(
            f"{WHY_NAMES[k]} {v}" for k, v in sorted(hb.items(), key=lambda kv: -kv[1])))
        year.store.close()
        ref, ref_cpu = timed(settings, args.slice, args.seed, start, os.path.join(tmp, "ref.db"), args.decisions,
                             "reference")
        ker, ker_cpu = timed(settings, args.slice, args.seed, start, os.path.join(tmp, "slice.db"), args.decisions)
        ref.store.close()
        ker.store.close()
        want, got = tables(os.path.join(tmp, "ref.db")), tables(os.path.join(tmp, "slice.db"))
        parity = want == got
        ref_rate = ref.stats["bars"] / ref_cpu
        print(f"reference (Engine.tick every tick): sessions={args.slice} bar_events={ref.stats['bars']} "
              f"cpu_s={ref_cpu:.2f}; kernel on the same slice cpu_s={ker_cpu:.2f}; every table equal: {parity}")
        parts, n_ticks, total = breakdown(settings, args.slice, args.seed, start, os.path.join(tmp, "parts.db"))
        other = total - sum(parts.values())
        print(f"per tick of the reference ({n_ticks} ticks of the slice, us of CPU):")
        for part, sec in sorted({**parts, "other (run loop, market, day roll)": other}.items(),
                                key=lambda kv: -kv[1]):
            print(f"  {part:<36} {sec / n_ticks * 1e6:8.1f}")
        print(f"  {'total':<36} {total / n_ticks * 1e6:8.1f}")
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    rate = bars / cpu
    print(f"bar_events_per_s={int(rate)} reference_per_s={int(ref_rate)} speedup={rate / ref_rate:.2f} "
          f"rss_mb={int(rss_mb)} parity={'ok' if parity else 'FAIL'} decisions={args.decisions} "
          f"compile_s={compile_s:.2f}")


if __name__ == "__main__":
    main()

"""Synthetic market generation benchmark: a year of bars (252 sessions x the default universe's 13 symbols x 390
minutes) the ways the app asks for them, each on a fresh market (best of ``--repeat``):

* ``year_wide``: one ``bars_wide`` call for the whole year (a replay's ``MarketFeed.preload_sessions``);
* ``year_long``: one ``bars`` call for the whole year (the long format: a bar file, ``frame_for_sessions``);
* ``day_by_day``: ``bars_wide`` one session at a time, in order (the live engine's feed);
* ``one_day_late``: a single session a year after the anchor (a Research run of one day).

    .venv/bin/python bench/synthetic_bench.py [--repeat 3] [--seed 7]

Last line: ``year_wide_s=<float> year_long_s=<float> day_by_day_s=<float> one_day_late_s=<float>``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import date

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from core.clock import UTC, session_bounds, trading_sessions  # noqa: E402
from core.venues.sim.synthetic import SyntheticMarket  # noqa: E402

FIRST = date(2025, 1, 2)


def bounds(day: date):
    open_, close = session_bounds(day)  # type: ignore[misc]
    return open_.astimezone(UTC), close.astimezone(UTC)


def year_wide(seed: int, days: list[date]) -> None:
    m = SyntheticMarket(seed, anchor=days[0])
    ts, cols = m.bars_wide(m.symbols, bounds(days[0])[0], bounds(days[-1])[1])
    assert len(ts) > 250 * 380


def year_long(seed: int, days: list[date]) -> None:
    m = SyntheticMarket(seed, anchor=days[0])
    f = m.bars(m.symbols, bounds(days[0])[0], bounds(days[-1])[1])
    assert len(f) > 250 * 380 * 13


def day_by_day(seed: int, days: list[date]) -> None:
    m = SyntheticMarket(seed, anchor=days[0])
    for d in days:
        m.bars_wide(m.symbols, *bounds(d))


def one_day_late(seed: int, days: list[date]) -> None:
    m = SyntheticMarket(seed, anchor=days[0])
    m.bars_wide(m.symbols, *bounds(days[-1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    days = trading_sessions(FIRST, 252)
    session_bounds(days[0])  # the exchange calendar loaded before timing
    out = {}
    for i, fn in enumerate((year_wide, year_long, day_by_day, one_day_late)):
        best = float("inf")
        for r in range(args.repeat):
            t0 = time.perf_counter()
            fn(args.seed + 100 * i + r, days)  # a seed of its own each time: nothing cached from another run
            best = min(best, time.perf_counter() - t0)
        out[fn.__name__] = best
        print(f"{fn.__name__:>14}: {best:.3f} s", flush=True)
    print(" ".join(f"{k}_s={v:.3f}" for k, v in out.items()))


if __name__ == "__main__":
    main()

"""Live feed benchmark: the CPU one minute of long-format bars costs ``MarketFeed.load`` (the form Alpaca's bars
arrive in, a minute at a time while live), scored wide (now) against the long-format scoring path (a strategy
without ``score_wide``), with a check that both give the same scores. A benchmark, not a test.

    .venv/bin/python bench/live_feed_bench.py [--minutes 200]

Last line: ``wide_ms_per_minute=<float> long_ms_per_minute=<float> same_scores=<bool>``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from core.config import load_settings  # noqa: E402
from core.feed import MarketFeed  # noqa: E402
from core.strategy import load_strategy  # noqa: E402
from core.venues.sim.synthetic import SyntheticMarket  # noqa: E402

START = datetime(2025, 3, 4, 14, 31, tzinfo=UTC)  # a fixed session's first minutes, not today's


class LongBars:
    """The synthetic market's bars handed over only in the long format, as a live Alpaca feed hands them."""

    def __init__(self, seed: int) -> None:
        self.market = SyntheticMarket(seed=seed)

    def bars(self, symbols: Any, start: datetime, end: datetime) -> Any:
        return self.market.bars(symbols, start, end)


class LongOnly:
    """The default strategy without ``score_wide``: the feed scores its long format."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name, self.warmup_bars = inner.name, inner.warmup_bars

    def score_bars(self, bars: Any) -> Any:
        return self.inner.score_bars(bars)


def per_minute(feed: MarketFeed, minutes: int) -> float:
    feed.load(START - timedelta(hours=1), START)  # the hour before: the scores' warm-up
    t0 = time.process_time()
    for m in range(minutes):
        feed.load(START + timedelta(minutes=m), START + timedelta(minutes=m + 1))
    return (time.process_time() - t0) / minutes * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=int, default=200)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    s = load_settings()
    strategy = load_strategy(s.strategy)
    symbols = s.universe.all_symbols
    wide = MarketFeed(LongBars(args.seed), strategy, symbols)
    long = MarketFeed(LongBars(args.seed), LongOnly(strategy), symbols)  # type: ignore[arg-type]
    w_ms, l_ms = per_minute(wide, args.minutes), per_minute(long, args.minutes)
    same = wide.score.shape == long.score.shape and bool(np.array_equal(wide.score, long.score, equal_nan=True))
    print(f"wide_ms_per_minute={w_ms:.2f} long_ms_per_minute={l_ms:.2f} same_scores={same}")


if __name__ == "__main__":
    main()

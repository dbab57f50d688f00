"""The replay's scored feed: a year of bars is loaded and scored on wide arrays, the same numbers as the
live path's session-by-session scoring of the long format."""

from __future__ import annotations

from datetime import date

from core.config import load_settings


def test_chunked_wide_preload_equals_scoring_the_long_bars_at_once():
    """preload_sessions builds wide arrays chunk by chunk and scores once with score_wide; every array must
    equal the one-call load() that goes through score_bars on the long format."""
    from datetime import datetime, timedelta

    import numpy as np

    from core.clock import NY, UTC, session_bounds
    from core.engine import Engine
    from core.research.replay import build_market, replay_days
    from core.state.store import Store

    s = load_settings()
    feeds = []
    for chunked in (False, True):
        market = build_market(s, seed=3, start=date(2025, 1, 2), bars_file=None, days=12)
        engine = Engine(s, Store(":memory:"), market)
        days = replay_days(s, date(2025, 1, 2), 12, market)
        if chunked:
            engine.feed.preload_sessions(days, chunk_sessions=5)
        else:  # the long format in one call (the arrays path of the synthetic market hidden)
            market.bars_wide = None  # type: ignore[attr-defined]
            start = session_bounds(days[0])[0].astimezone(UTC) - timedelta(days=5)
            end = datetime.combine(days[-1] + timedelta(days=1), datetime.min.time(), tzinfo=NY).astimezone(UTC)
            engine.feed.load(start, end)
        feeds.append(engine.feed)
    whole, chunked = feeds
    for name in ("ts", "open", "high", "low", "close", "volume", "score", "vol_spike"):
        a, b = getattr(whole, name), getattr(chunked, name)
        assert a.shape == b.shape and np.array_equal(a, b, equal_nan=True), name
    assert np.isfinite(chunked.score).sum() > 10_000
    assert whole._raw_tail.equals(chunked._raw_tail)


def test_day_by_day_loads_on_arrays_equal_the_long_format():
    """The live feed loads a session at its first tick: from the synthetic market's arrays it scores the same
    window (the last warm-up rows and the new day) as the long-format path, to the last bit."""
    from datetime import UTC, datetime, timedelta

    import numpy as np

    from core.feed import MarketFeed
    from core.strategy import load_strategy
    from core.venues.sim.synthetic import SyntheticMarket

    s = load_settings()
    feeds = []
    for arrays in (True, False):
        market = SyntheticMarket(3, anchor=date(2025, 3, 3))
        if not arrays:
            market.bars_wide = None  # type: ignore[method-assign,assignment]  # the long format only
        feed = MarketFeed(market, load_strategy(s.strategy), s.universe.all_symbols)
        for k in range(12):  # a weekend and a short week among them
            feed.ensure(datetime(2025, 3, 7, 15, tzinfo=UTC) + timedelta(days=k))
        feeds.append(feed)
    a, b = feeds
    assert len(a.ts) > 5 * 390
    for name in ("ts", "open", "high", "low", "close", "volume", "score", "vol_spike"):
        assert np.array_equal(getattr(a, name), getattr(b, name), equal_nan=True), name
    assert np.isfinite(a.score[-1]).all()  # scored, not left empty

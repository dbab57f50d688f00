"""Issue 27 item 8: at SIM_SPEED=60 the tick job overran its 0.25 s interval at each session's first tick, which
generated and scored the whole day inside the engine lock. The runtime now loads the next session's bars in the
last minutes of a session, computing outside the lock; the first tick of the next session loads nothing, and the
bars and scores are those the tick would have loaded. Fixed sessions and a clock the test moves."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np

from core.clock import SimClock, session_bounds
from core.config import load_settings
from core.runtime import PREFETCH_MIN, Runtime

DAY, NEXT = date(2025, 3, 10), date(2025, 3, 11)


def runtime(tmp_path, name: str) -> Runtime:  # type: ignore[no-untyped-def]
    rt = Runtime(load_settings(db_path=str(tmp_path / f"{name}.db"), engine_jobs=False, sim_start=DAY),
                 today=date(2025, 3, 12))
    rt.clock = SimClock(session_bounds(DAY)[1].astimezone(UTC) - timedelta(minutes=PREFETCH_MIN + 5))  # type: ignore[index]
    return rt


def test_the_next_session_is_loaded_before_the_close_and_the_first_tick_loads_nothing(tmp_path, monkeypatch):
    ahead, plain = runtime(tmp_path, "ahead"), runtime(tmp_path, "plain")
    try:
        for rt in (ahead, plain):
            rt.run_tick()  # today's bars loaded by the tick
        assert "prefetch" not in ahead.run_session_events()  # 15 minutes before the close: not yet
        close = session_bounds(DAY)[1].astimezone(UTC)  # type: ignore[index]
        ahead.clock.set(close - timedelta(minutes=PREFETCH_MIN - 1))  # type: ignore[attr-defined]
        assert "prefetch" in ahead.run_session_events()
        next_open = session_bounds(NEXT)[0].astimezone(UTC)  # type: ignore[index]
        assert ahead.engine.feed.loaded_until > next_open
        # the next open: the prefetched feed asks the market for nothing
        loads: list[tuple[datetime, datetime]] = []
        real = ahead.engine.feed.market.bars_wide
        monkeypatch.setattr(ahead.engine.feed.market, "bars_wide",
                            lambda syms, a, b: loads.append((a, b)) or real(syms, a, b))
        for rt in (ahead, plain):
            rt.clock.set(next_open + timedelta(minutes=1))  # type: ignore[attr-defined]
            rt.run_tick()
        assert loads == []
        fa, fp = ahead.engine.feed, plain.engine.feed
        assert fa.loaded_until == fp.loaded_until and np.array_equal(fa.ts, fp.ts)
        for name in ("close", "volume", "score", "vol_spike"):
            assert np.array_equal(getattr(fa, name), getattr(fp, name), equal_nan=True), name
        # a second call has nothing left to load
        assert ahead.prefetch_next_session(close - timedelta(minutes=1)) is False
    finally:
        ahead.stop()
        plain.stop()

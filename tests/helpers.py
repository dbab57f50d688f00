"""Test helpers: hand-made bars and a strategy whose scores the test chooses."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from streamlit.testing.v1 import AppTest

from core.clock import UTC, session_bounds
from core.config import Settings, load_settings
from core.engine import Engine
from core.state.store import Store
from core.universe import DEFAULT_UNIVERSE
from core.venues.sim.bar_files import ReplayMarket

DAY = date(2025, 3, 10)  # a Monday (EDT: the open is 13:30 UTC)


def flat_bars(days: list[date], prices: dict[str, float] | None = None,
              overrides: Callable[[str, pd.DatetimeIndex, dict[str, np.ndarray]], None] | None = None) -> pd.DataFrame:
    """1-minute bars at constant prices for every universe symbol; ``overrides`` may edit OHLC arrays in place."""
    prices = prices or {}
    frames = []
    for day in days:
        open_, close = session_bounds(day)
        idx = pd.date_range(open_.astimezone(UTC), close.astimezone(UTC), freq="1min", inclusive="left")
        for sym in DEFAULT_UNIVERSE.all_symbols:
            p = prices.get(sym, 100.0)
            arr = {k: np.full(len(idx), p, dtype=float) for k in ("open", "high", "low", "close")}
            arr["volume"] = np.full(len(idx), 10_000.0)
            if overrides:
                overrides(sym, idx, arr)
            frames.append(pd.DataFrame({"timestamp": idx, "symbol": sym, **arr}))
    df = pd.concat(frames, ignore_index=True).sort_values(["timestamp", "symbol"], kind="stable")
    return df.reset_index(drop=True)


def gap_at(symbol: str, when: datetime, price: float) -> Callable[[str, pd.DatetimeIndex, dict[str, np.ndarray]],
                                                                     None]:
    """A ``flat_bars`` override: ``symbol`` trades at ``price`` (open, high, low and close) from ``when`` on."""
    def edit(sym: str, idx: pd.DatetimeIndex, arr: dict[str, np.ndarray]) -> None:
        if sym == symbol:
            for k in ("open", "high", "low", "close"):
                arr[k][idx >= when] = price
    return edit


class ScriptedStrategy:
    """score(symbol, bar_open_ts) chosen by the test; vol_spike 0 unless given."""

    name = "scripted"
    warmup_bars = 1

    def __init__(self, score: Callable[[str, pd.Timestamp], float],
                 spike: Callable[[str, pd.Timestamp], float] | None = None) -> None:
        self.score = score
        self.spike = spike or (lambda s, t: 0.0)

    def score_bars(self, bars: pd.DataFrame) -> pd.DataFrame:
        out = bars[["timestamp", "symbol"]].copy()
        out["score"] = [float(self.score(s, t)) for s, t in zip(bars["symbol"], bars["timestamp"], strict=True)]
        out["vol_spike"] = [float(self.spike(s, t)) for s, t in zip(bars["symbol"], bars["timestamp"], strict=True)]
        return out.reset_index(drop=True)


def at(day: date, hh: int, mm: int, ss: int = 0) -> datetime:
    """A New York wall time on ``day`` as an aware UTC datetime."""
    open_, _ = session_bounds(day)
    return (open_.replace(hour=hh, minute=mm, second=ss)).astimezone(UTC)


def make_engine(bars: pd.DataFrame, strategy, *, db: str = ":memory:", settings: Settings | None = None,
                **overrides) -> Engine:
    s = settings or load_settings(**overrides)
    return Engine(s, Store(db), ReplayMarket(bars), strategy=strategy)


def run_ticks(engine: Engine, start: datetime, end: datetime, step_s: int = 30) -> list:
    reports = []
    t = start
    while t <= end:
        reports.append(engine.tick(t))
        t += timedelta(seconds=step_s)
    return reports


def broker_order_count(engine: Engine) -> int:
    return engine.store.scalar("SELECT COUNT(*) FROM sim_orders WHERE parent_id IS NULL")


APP = str(Path(__file__).resolve().parents[1] / "app.py")


def new_app(timeout: float = 60) -> AppTest:
    """A new browser session of the app under AppTest, after its first run (which must not raise)."""
    at = AppTest.from_file(APP, default_timeout=timeout)
    at.run()
    assert not at.exception, at.exception
    return at

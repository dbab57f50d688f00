"""The synthetic market is a function of (seed, date, universe): a session's bars do not depend on where the market
was anchored, on which sessions were asked for before it or in which order (core/venues/sim/synthetic.py)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import numpy as np
import pytest

from core.clock import UTC, previous_session, session_bounds, sessions_between
from core.universe import DEFAULT_UNIVERSE, Basket
from core.venues.sim.synthetic import DEFAULT_PRICES, SyntheticMarket, universe_key

DAY = date(2026, 12, 4)  # a Friday
COLUMNS = ("open", "high", "low", "close", "volume")
ROOT = Path(__file__).resolve().parents[1]


def bounds(day: date):
    open_, close = session_bounds(day)  # type: ignore[misc]
    return open_.astimezone(UTC), close.astimezone(UTC)


def wide_day(m: SyntheticMarket, day: date = DAY) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    return m.bars_wide(m.symbols, *bounds(day))


def assert_same(a: tuple[np.ndarray, dict], b: tuple[np.ndarray, dict]) -> None:
    assert np.array_equal(a[0], b[0])
    for c in COLUMNS:
        assert np.array_equal(a[1][c], b[1][c]), c  # bit for bit, not approximately


@pytest.mark.parametrize("anchor", [date(2026, 11, 4), date(2025, 12, 4), DAY], ids=["month", "year", "the-day"])
def test_a_day_is_the_same_whatever_the_anchor_and_the_order_asked(anchor: date) -> None:
    alone = wide_day(SyntheticMarket(7, anchor=DAY))
    days = sessions_between(anchor, DAY)
    # in order, one session at a time, as the live engine's feed asks
    m = SyntheticMarket(7, anchor=anchor)
    for d in days:
        got = wide_day(m, d)
    assert_same(got, alone)
    # reversed: the day first, then every earlier one back to the anchor, then the day again
    m = SyntheticMarket(7, anchor=anchor)
    for d in reversed(days):
        got = wide_day(m, d)
        if d == DAY:
            assert_same(got, alone)
    assert_same(wide_day(m), alone)  # made again when more sessions than are kept were asked for since
    # the whole range at once (a replay's preload), in both formats
    m = SyntheticMarket(7, anchor=anchor)
    ts, cols = m.bars_wide(m.symbols, bounds(days[0])[0], bounds(DAY)[1])
    mask = ts >= bounds(DAY)[0].timestamp()
    assert_same((ts[mask], {c: cols[c][mask] for c in COLUMNS}), alone)
    long = SyntheticMarket(7, anchor=anchor).bars(["META", "AAPL"], bounds(days[0])[0], bounds(DAY)[1])
    meta = long[(long["symbol"] == "META") & (long["timestamp"] >= bounds(DAY)[0])]
    j = m.symbols.index("META")
    assert np.array_equal(meta["close"].to_numpy(), alone[1]["close"][:, j])
    assert np.array_equal(meta["volume"].to_numpy(), alone[1]["volume"][:, j])


def test_the_anchor_does_not_bound_the_bars() -> None:
    """A market anchored on a day serves the sessions before it too (a replay's warm-up, a chart of earlier
    days): the same bars a market anchored earlier serves."""
    before = previous_session(DAY)
    late = SyntheticMarket(7, anchor=DAY)
    assert_same(wide_day(late, before), wide_day(SyntheticMarket(7, anchor=date(2026, 1, 2)), before))
    assert len(late.frame_for_sessions(1)) == 390 * len(late.symbols)  # anchor: frame_for_sessions' first day
    assert late.frame_for_sessions(1)["timestamp"].min() == bounds(DAY)[0]


def test_different_seeds_give_different_bars() -> None:
    a, b = wide_day(SyntheticMarket(7)), wide_day(SyntheticMarket(8))
    assert np.array_equal(a[0], b[0])  # the same minutes
    for c in COLUMNS:
        assert not np.isclose(a[1][c], b[1][c]).any(axis=0).all(), c  # every symbol's path differs
    # and the opening levels too: the day's level is the seed's as well
    assert not np.isclose(a[1]["open"][0], b[1]["open"][0]).any()


def test_a_different_universe_gives_different_bars() -> None:
    more = dataclasses.replace(DEFAULT_UNIVERSE, tiers={**DEFAULT_UNIVERSE.tiers, "B": ("MSFT", "AMZN", "META",
                                                                                            "NFLX")})
    moved = dataclasses.replace(DEFAULT_UNIVERSE, baskets=(
        Basket("MEGATECH", ("AAPL", "MSFT", "AMZN", "META", "GOOGL"), "SQQQ", ("QQQ", "TQQQ"), "QQQ"),
        Basket("SEMIS", ("NVDA", "AMD", "AVGO", "TSLA"), "SOXS", ("SOXX", "SOXL"), "SOXX")))  # same symbols
    base = SyntheticMarket(7)
    keys = {universe_key(u) for u in (DEFAULT_UNIVERSE, more, moved)}
    assert len(keys) == 3
    ref = wide_day(base)[1]["close"]
    for u in (more, moved):
        m = SyntheticMarket(7, universe=u)
        got = wide_day(m)[1]["close"]
        for s in ("AAPL", "QQQ", "SOXS"):
            assert not np.isclose(got[:, m.symbols.index(s)], ref[:, base.symbols.index(s)]).all(), (s, u)
    # an equal universe (another object, the same tiers and baskets) is the same market
    same = dataclasses.replace(DEFAULT_UNIVERSE, tiers=dict(DEFAULT_UNIVERSE.tiers))
    assert_same(wide_day(SyntheticMarket(7, universe=same)), wide_day(base))


def test_the_bars_do_not_depend_on_the_process() -> None:
    """The universe's key is a CRC, not Python's per-process hash(): two interpreters with other hash seeds
    make the same day."""
    code = ("import json, sys; from datetime import date; from core.clock import session_bounds; "
            "from core.venues.sim.synthetic import SyntheticMarket; m = SyntheticMarket(7); "
            "o, c = session_bounds(date(2026, 12, 4)); ts, cols = m.bars_wide(m.symbols, o, c); "
            "print(json.dumps([cols['close'][-1].tolist(), float(cols['volume'].sum())]))")
    here = wide_day(SyntheticMarket(7))[1]
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(ROOT)}
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                             check=True, timeout=120)
        closes, volume = json.loads(out.stdout.strip().splitlines()[-1])
        assert closes == here["close"][-1].tolist() and volume == float(here["volume"].sum())


def test_a_close_leads_to_the_next_open_across_the_night() -> None:
    """Each session ends on the daily level's close and the next opens a small overnight gap away from it."""
    m = SyntheticMarket(7)
    days = sessions_between(date(2026, 10, 1), date(2026, 11, 25))  # no weekday holiday in between
    gaps = []
    for a, b in zip(days, days[1:], strict=False):
        gaps.append(np.log(wide_day(m, b)[1]["open"][0] / wide_day(m, a)[1]["close"][-1]))
    g = np.abs(np.array(gaps))
    stocks = [m.symbols.index(s) for s in DEFAULT_UNIVERSE.stocks]
    assert np.median(g[:, stocks]) < 0.006 and g[:, stocks].max() < 0.03
    assert g.max() < 0.08  # an inverse ETF gaps -3x its index
    assert (g > 0).all()  # a gap, not a copy of the close


def test_prices_stay_in_a_realistic_band_for_decades() -> None:
    m = SyntheticMarket(7)
    p0 = np.array([DEFAULT_PRICES[s] for s in m.symbols])
    inverse = np.array([s in ("SQQQ", "SOXS") for s in m.symbols])
    for year in range(1991, 2036, 4):
        day = sessions_between(date(year, 6, 1), date(year, 6, 10))[0]
        ratio = wide_day(m, day)[1]["close"][-1] / p0
        assert ((ratio > 1 / 4) & (ratio < 4))[~inverse].all(), (day, ratio)
        assert ((ratio > 1 / 25) & (ratio < 25))[inverse].all(), (day, ratio)


def test_intraday_features_hold_on_a_day_far_from_any_anchor() -> None:
    """The statistical features of the module docstring on a month of 2031, asked alone: baskets together,
    inverse ETFs -3x their index per minute, a U-shaped volume."""
    m = SyntheticMarket(5, anchor=date(2025, 3, 3))
    days = sessions_between(date(2031, 3, 3), date(2031, 3, 28))
    ts, cols = m.bars_wide(m.symbols, bounds(days[0])[0], bounds(days[-1])[1])
    r = np.diff(np.log(cols["close"]), axis=0)
    r = r[np.diff(ts) == 60]  # within sessions
    col = {s: i for i, s in enumerate(m.symbols)}
    for members in (("AAPL", "MSFT", "AMZN", "META", "GOOGL"), ("NVDA", "AMD", "AVGO")):
        c = np.corrcoef(r[:, [col[s] for s in members]].T)
        assert c[~np.eye(len(members), dtype=bool)].mean() > 0.3, members
    for index, inverse in (("QQQ", "SQQQ"), ("SOXX", "SOXS")):
        beta = np.polyfit(r[:, col[index]], r[:, col[inverse]], 1)[0]
        assert -3.1 < beta < -2.9 and np.corrcoef(r[:, col[index]], r[:, col[inverse]])[0, 1] < -0.99
    v = wide_day(m, days[0])[1]["volume"].sum(axis=1)
    assert np.r_[v[:30], v[-30:]].mean() > 1.5 * v[180:210].mean()

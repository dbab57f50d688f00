"""Seeded synthetic 1-minute bars for the universe: the market of the first run.

Per regular session (NYSE calendar: holidays, early closes, DST), every symbol
gets one bar a minute. Returns are built from
* a market factor and one sector factor per basket (MEGATECH, SEMIS), so
  basket members move together;
* persistent drift episodes (AR(1), partly shared by the sector), so
  short-horizon momentum of both signs appears several times a day;
* volatility clustering (a log-volatility AR(1) shared by the market, plus a
  per-symbol part) on a U-shaped intraday profile;
* rare jumps with volume bursts.
Each basket's index ETF (QQQ, SOXX) follows market + sector with little noise,
and its inverse ETF (SQQQ, SOXS) returns about -3x the index each minute.
Days are generated in order from ``anchor``; a day depends only on the seed,
its date and the previous close, so any request order gives the same bars.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from core.clock import UTC, session_bounds, trading_sessions
from core.universe import DEFAULT_UNIVERSE, Universe
from core.venues.marketdata import BAR_COLUMNS, PRICE_COLUMNS, empty_bars, require_aware

_BATCH_DAYS = 64  # sessions generated together (their AR(1) paths share one pass over the minutes)
_KEEP_DAYS = 64  # sessions kept in memory; older ones are generated again when asked for

DEFAULT_PRICES = {
    "AAPL": 230.0, "NVDA": 180.0, "TSLA": 330.0, "MSFT": 500.0, "AMZN": 220.0, "META": 750.0, "GOOGL": 250.0,
    "AMD": 160.0, "AVGO": 340.0, "QQQ": 580.0, "SQQQ": 17.0, "SOXX": 250.0, "SOXS": 6.0,
}
BASE_VOLUME = {
    "AAPL": 120_000, "NVDA": 400_000, "TSLA": 250_000, "MSFT": 60_000, "AMZN": 100_000, "META": 40_000,
    "GOOGL": 80_000, "AMD": 150_000, "AVGO": 50_000, "QQQ": 150_000, "SQQQ": 300_000, "SOXX": 20_000,
    "SOXS": 400_000,
}


class SyntheticMarket:
    def __init__(self, seed: int, universe: Universe = DEFAULT_UNIVERSE, anchor: date | None = None,
                 start_prices: dict[str, float] | None = None, minute_vol: float = 0.0011,
                 jump_prob: float = 0.003) -> None:
        self.seed = int(seed)
        self.universe = universe
        self.anchor = anchor or date(2025, 1, 2)
        self.minute_vol = minute_vol
        self.jump_prob = jump_prob
        self.symbols = universe.all_symbols
        prices = {**DEFAULT_PRICES, **(start_prices or {})}
        self._last_close = np.array([prices.get(s, 100.0) for s in self.symbols], dtype=float)
        self._days: dict[date, _Day] = {}  # the latest sessions made (see _session)
        self._prev_close: dict[date, np.ndarray] = {}  # each session's opening reference: the closes before it
        self._order: list[date] = []
        self._next_day = trading_sessions(self.anchor, 1)[0]
        self._roles = self._build_roles()

    # ---------------------------------------------------------------- structure
    def _build_roles(self) -> dict[str, tuple[str, int | None]]:
        """symbol -> (role, basket index): stock, index or inverse; stocks outside baskets have None."""
        roles: dict[str, tuple[str, int | None]] = {}
        for i, b in enumerate(self.universe.baskets):
            for m in b.members:
                roles[m] = ("stock", i)
            roles[b.index_etf] = ("index", i)
            roles[b.inverse_etf] = ("inverse", i)
        for s in self.symbols:
            roles.setdefault(s, ("stock", None))
        return roles

    # ---------------------------------------------------------------- generation
    def _draw_day(self, day: date) -> dict[str, Any]:
        """Every random number of one session, in the order the session has always drawn them (its own
        generator: a day depends only on the seed and its date; prices then chain through the previous close)."""
        bounds = session_bounds(day)
        assert bounds is not None
        open_, close = (b.astimezone(UTC) for b in bounds)
        n = int((close - open_).total_seconds() // 60)
        rng = np.random.default_rng([self.seed, day.toordinal()])
        k = len(self.baskets_or_one())
        s_n = len(self.symbols)
        d: dict[str, Any] = {"day": day, "open": open_, "n": n}
        # log-volatility regime shared by the market, plus per-symbol noise
        d["h"] = (rng.normal(0, 0.08, n), rng.normal(0, 0.3))
        d["mkt"] = rng.normal(0, 1, n) * 0.55
        d["sector"] = rng.normal(0, 1, (n, k)) * 0.6
        # drift episodes: persistent, partly shared by the sector (so baskets trend together)
        d["sec_drift"] = (rng.normal(0, 0.022, (n, k)), rng.normal(0, 0.15, k))
        d["own_drift"] = (rng.normal(0, 0.03, (n, s_n)), rng.normal(0, 0.15, s_n))
        d["idio"] = rng.normal(0, 1, (n, s_n))
        d["jumps"] = (rng.random((n, s_n)) < self.jump_prob) * rng.normal(0, 6.0, (n, s_n))
        d["gap"] = rng.normal(0, 0.004, s_n)
        d["wick"] = rng.normal(0, 0.35, (n, s_n))
        d["wick2"] = rng.normal(0, 0.35, (n, s_n))
        d["volume_noise"] = rng.normal(0, 0.25, (n, s_n))
        return d

    def _build_day(self, d: dict[str, Any], h: np.ndarray, sec_drift: np.ndarray, own_drift: np.ndarray) -> _Day:
        """One session's bars from its draws and AR(1) paths, from the previous session's closes."""
        n, s_n, vol = d["n"], len(self.symbols), self.minute_vol
        idx = pd.date_range(d["open"], periods=n, freq="1min")
        mkt, sector, idio, jumps = d["mkt"], d["sector"], d["idio"], d["jumps"]
        # intraday U-shape of volatility and volume
        x = np.linspace(-1.0, 1.0, n)
        u_vol = 0.75 + 0.6 * x**2
        u_volume = 0.6 + 1.4 * x**2
        regime = np.exp(h)[:, None]
        rets = np.empty((n, s_n))
        for j, sym in enumerate(self.symbols):
            role, b = self._roles[sym]
            bi = 0 if b is None else b
            if role == "stock":
                sys_part = mkt + (sector[:, bi] if b is not None else 0.0)
                z = sys_part + 0.7 * idio[:, j] + 0.5 * sec_drift[:, bi] + 0.5 * own_drift[:, j] + jumps[:, j]
            else:  # index ETF: the sector's systematic part with little noise
                z = mkt + sector[:, bi] + 0.5 * sec_drift[:, bi] + 0.15 * idio[:, j]
            rets[:, j] = z
        rets *= vol * u_vol[:, None] * regime
        for j, sym in enumerate(self.symbols):
            role, b = self._roles[sym]
            if role == "inverse":
                idx_sym = self.universe.baskets[b].index_etf
                jj = self.symbols.index(idx_sym)
                rets[:, j] = -3.0 * rets[:, jj] + 0.05 * vol * idio[:, j]
        # prices
        gap = d["gap"]
        for j, sym in enumerate(self.symbols):
            role, b = self._roles[sym]
            if role == "inverse":
                jj = self.symbols.index(self.universe.baskets[b].index_etf)
                gap[j] = -3.0 * gap[jj]
        self._prev_close.setdefault(d["day"], self._last_close.copy())
        first_open = self._last_close * np.exp(gap)
        log_close = np.log(first_open)[None, :] + np.cumsum(rets, axis=0)
        close_px = np.exp(log_close)
        open_px = np.vstack([first_open[None, :], close_px[:-1]])
        wick = np.abs(d["wick"]) * vol * u_vol[:, None] * regime
        wick2 = np.abs(d["wick2"]) * vol * u_vol[:, None] * regime
        high = np.maximum(open_px, close_px) * np.exp(wick)
        low = np.minimum(open_px, close_px) * np.exp(-wick2)
        base_v = np.array([BASE_VOLUME.get(s, 50_000) for s in self.symbols], dtype=float)
        move = np.abs(rets) / (vol * u_vol[:, None] * regime)
        volume = base_v[None, :] * u_volume[:, None] * np.exp(d["volume_noise"])
        volume *= 1.0 + 0.35 * np.maximum(move - 1.0, 0.0) + 3.0 * (jumps != 0)
        volume = np.maximum(1.0, np.round(volume))
        self._last_close = close_px[-1].copy()
        return _Day(idx.as_unit("s").asi8.astype(np.int64), open_px, high, low, close_px, volume)

    def _generate_days(self, days: list[date]) -> list[_Day]:
        """Sessions in order: draws per day, the three AR(1) paths of all of them at once (one pass over the
        minutes for the whole batch, the same arithmetic per element), then prices day by day."""
        draws = [self._draw_day(day) for day in days]
        paths = {name: _ar1_batch([d[name][0] for d in draws], phi, [d[name][1] for d in draws])
                 for name, phi in (("h", 0.98), ("sec_drift", 0.985), ("own_drift", 0.98))}
        return [self._build_day(d, paths["h"][i], paths["sec_drift"][i], paths["own_drift"][i])
                for i, d in enumerate(draws)]

    def baskets_or_one(self) -> tuple:
        return self.universe.baskets or (None,)

    def _extend_to(self, last_day: date) -> None:
        todo: list[date] = []
        while self._next_day <= last_day:
            todo.append(self._next_day)
            self._next_day = trading_sessions(self._next_day + timedelta(days=1), 1)[0]
        for start in range(0, len(todo), _BATCH_DAYS):
            batch = todo[start:start + _BATCH_DAYS]
            for day, bars in zip(batch, self._generate_days(batch), strict=True):
                self._days[day] = bars
                self._order.append(day)
            # a year of bars is the feed's to keep, not ours: older sessions are made again if asked for
            while len(self._days) > _KEEP_DAYS:
                self._days.pop(next(iter(self._days)))

    def _session(self, day: date) -> _Day:
        """A generated session's bars, made again from its opening closes when they were let go."""
        got = self._days.get(day)
        if got is None:
            carry = self._last_close
            self._last_close = self._prev_close[day]
            try:
                got = self._generate_days([day])[0]
            finally:
                self._last_close = carry
        return got

    # ---------------------------------------------------------------- MarketData
    def bars(self, symbols: Sequence[str], start: datetime, end: datetime) -> pd.DataFrame:
        require_aware(start, end)
        start_utc, end_utc = start.astimezone(UTC), end.astimezone(UTC)
        if end_utc <= start_utc:
            return empty_bars()
        from core.clock import NY

        last_day = (end_utc - timedelta(microseconds=1)).astimezone(NY).date()
        if last_day < self._order[0] if self._order else last_day < self._next_day:
            return empty_bars()
        self._extend_to(last_day)
        first_day = start_utc.astimezone(NY).date()
        parts = [self._session(d) for d in self._order if first_day <= d <= last_day]
        if not parts:
            return empty_bars()
        lo, hi = start_utc.timestamp(), end_utc.timestamp()  # float: an end of hh:mm:00.000001 keeps hh:mm
        ts = np.concatenate([p.ts for p in parts])
        rows = (ts >= lo) & (ts < hi)
        # long format, sorted by (timestamp, symbol): the symbols' alphabetical order within each minute
        wanted = set(symbols)
        cols = [j for j in np.argsort(np.array(self.symbols, dtype=object), kind="stable")
                if self.symbols[j] in wanted]
        if not cols:
            return empty_bars()
        n, k = int(rows.sum()), len(cols)

        def long(name: str) -> np.ndarray:
            return np.concatenate([getattr(p, name) for p in parts])[rows][:, cols].ravel()

        frame = pd.DataFrame({
            "timestamp": pd.to_datetime(np.repeat(ts[rows], k), unit="s", utc=True).as_unit("ns"),
            "symbol": pd.Series(np.tile(np.array([self.symbols[j] for j in cols], dtype=object), n), dtype="str"),
            "open": long("open"), "high": long("high"), "low": long("low"), "close": long("close"),
            "volume": long("volume"),
        })
        return frame[BAR_COLUMNS]

    def bars_wide(self, symbols: Sequence[str], start: datetime, end: datetime) -> tuple[np.ndarray, dict[str, Any]]:
        """The bars of [start, end) as (bar open times in epoch seconds, {column: array[time, symbol]}), columns
        in ``symbols`` order: what ``MarketFeed`` keeps, without the long format in between."""
        require_aware(start, end)
        lo, hi = start.timestamp(), end.timestamp()
        cols = [self.symbols.index(s) for s in symbols]
        if hi <= lo:
            return np.empty(0, dtype=np.int64), {c: np.empty((0, len(cols))) for c in PRICE_COLUMNS + ["volume"]}
        from core.clock import NY

        last_day = (end.astimezone(UTC) - timedelta(microseconds=1)).astimezone(NY).date()
        if last_day >= (self._order[0] if self._order else self._next_day):
            self._extend_to(last_day)
        first_day = start.astimezone(NY).date()
        parts = [self._session(d) for d in self._order if first_day <= d <= last_day]
        if not parts:
            return np.empty(0, dtype=np.int64), {c: np.empty((0, len(cols))) for c in PRICE_COLUMNS + ["volume"]}
        # filled session by session into one array per column: a year is one copy, not three
        keep = [(p, (p.ts >= lo) & (p.ts < hi)) for p in parts]
        ts = np.concatenate([p.ts[m] for p, m in keep])
        out = {}
        for name in PRICE_COLUMNS + ["volume"]:
            arr, at = np.empty((len(ts), len(cols))), 0
            for p, m in keep:
                block = getattr(p, name)[m][:, cols]
                arr[at:at + len(block)] = block
                at += len(block)
            out[name] = arr
        return ts, out

    def frame_for_sessions(self, days: int) -> pd.DataFrame:
        sessions = trading_sessions(self.anchor, days)
        start = session_bounds(sessions[0])[0].astimezone(UTC)
        end = session_bounds(sessions[-1])[1].astimezone(UTC)
        return self.bars(self.symbols, start, end)


@dataclass(frozen=True)
class _Day:
    """One session's bars, wide: minute open times (epoch seconds) and arrays[minute, symbol]."""

    ts: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray


def _ar1_batch(shocks: list[np.ndarray], phi: float, x0: list[Any]) -> list[np.ndarray]:
    """x_t = phi x_{t-1} + e_t along axis 0 of each array (from x_{-1} = its x0), all arrays in one pass over
    t: the loop runs once per minute for a whole batch of sessions, not once per minute per session. Each
    element sees the same operations as in a loop of its own, so the numbers do not depend on the batch."""
    n_max = max(len(a) for a in shocks)
    tail = shocks[0].shape[1:]
    e = np.zeros((n_max, len(shocks), *tail))
    for i, a in enumerate(shocks):
        e[: len(a), i] = a  # sessions shorter than the longest (early closes) run on zeros past their end
    prev = np.stack([np.asarray(x, dtype=float) * np.ones(tail) for x in x0])
    out = np.empty_like(e)
    for t in range(n_max):
        prev = phi * prev + e[t]
        out[t] = prev
    return [out[: len(a), i] for i, a in enumerate(shocks)]

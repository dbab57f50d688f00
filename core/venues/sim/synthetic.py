"""Seeded synthetic 1-minute bars for the universe: the market of the first run.

Per regular session (NYSE calendar: holidays, early closes, DST), every symbol
gets one bar a minute. Returns are built from
* a market factor and one sector factor per basket (MEGATECH, SEMIS), so
  basket members move together;
* persistent drift episodes (AR(1), partly shared by the sector), so
  short-horizon momentum of both signs appears several times a day;
* volatility clustering (a log-volatility AR(1) shared by the market) on a
  U-shaped intraday profile;
* rare jumps with volume bursts.
Each basket's index ETF (QQQ, SOXX) follows market + sector with little noise,
and its inverse ETF (SQQQ, SOXS) returns about -3x the index each minute.

A day's bars are a function of (seed, date, universe) alone: the same session is
the same whether a market is anchored on it, a month or a year before it, and
whatever was asked before (the live engine's day is the day a Research run
replays). ``anchor`` only names the first session of ``frame_for_sessions``.
Two layers make that so:

* the **daily level**, one step per weekday from ``EPOCH`` (1990-01-01): per
  symbol a log price ``y`` around ``log(start price)``,
  ``y[d+1] = PHI * y[d] + gap[d] + move[d]``, a slowly mean-reverting walk (a
  half-life of about 170 sessions keeps prices in a realistic band for
  decades). ``gap`` (overnight) and ``move`` (the session's open-to-close) are
  drawn with the intraday model's factor structure (market, sector, own part;
  an inverse ETF's are -3x its index's) and about its day-scale spread, from
  one generator per calendar year seeded by (seed, universe, year). The whole
  walk (about 12,000 weekdays) is a few vectorised operations, cached per
  (seed, universe). Weekdays are stepped whether or not the exchange opens,
  so the levels do not depend on the holiday calendar: a holiday's move shows
  in the next open's gap;
* the **intraday path** of a session, from its own generator seeded by
  (seed, universe, date): every random number of the day (factors, AR(1)
  drift and log-volatility paths starting from their own draws, jumps, wicks,
  volume noise). The path opens at the level times the overnight gap and is
  bent, as a Gaussian bridge (minute by minute in proportion to each minute's
  variance), to end exactly at the level's close, which is the next
  session's reference: a session's close and the next open differ by that
  overnight gap only, and neither depends on the path of any other day.

The universe enters as a stable CRC-32 of its symbols (in order) and basket
roles (``universe_key``), never Python's per-process ``hash()``.
"""

from __future__ import annotations

import json
import zlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from core.clock import CALENDAR_END, CALENDAR_START, NY, UTC, session_bounds, sessions_between, trading_sessions
from core.universe import DEFAULT_UNIVERSE, Universe
from core.venues.marketdata import BAR_COLUMNS, PRICE_COLUMNS, empty_bars, require_aware

_BATCH_DAYS = 64  # sessions generated together (their AR(1) paths share one pass over the minutes)
_KEEP_DAYS = 64  # sessions kept in memory; older ones are generated again when asked for

EPOCH = date(1990, 1, 1)  # a Monday, before the exchange calendar's first session: the level walk's first step
LEVEL_PHI = 1.0 - 1.0 / 100.0  # the daily level's mean reversion (half-life about 69 sessions)
GAP_SD = 0.004  # overnight gap, log
_FULL_SESSION = 390  # minutes: the daily level's move is scaled for a full session
_STREAM_DAY, _STREAM_LEVEL = 1, 2  # generator streams: a session's intraday draws, a year of daily levels

DEFAULT_PRICES = {
    "AAPL": 230.0, "NVDA": 180.0, "TSLA": 330.0, "MSFT": 500.0, "AMZN": 220.0, "META": 750.0, "GOOGL": 250.0,
    "AMD": 160.0, "AVGO": 340.0, "QQQ": 580.0, "SQQQ": 17.0, "SOXX": 250.0, "SOXS": 6.0,
}
BASE_VOLUME = {
    "AAPL": 120_000, "NVDA": 400_000, "TSLA": 250_000, "MSFT": 60_000, "AMZN": 100_000, "META": 40_000,
    "GOOGL": 80_000, "AMD": 150_000, "AVGO": 50_000, "QQQ": 150_000, "SQQQ": 300_000, "SOXX": 20_000,
    "SOXS": 400_000,
}

# the intraday model: per-minute loadings of the standard normal draws, and the AR(1) paths (phi, shock sd,
# sd of the session's first value)
MKT_SD, SECTOR_SD = 0.55, 0.6
IDIO_STOCK, IDIO_INDEX, IDIO_INVERSE = 0.7, 0.15, 0.05
DRIFT_LOAD = 0.5  # sector and own drift episodes, in a stock's (and an index's sector) return
JUMP_SD = 6.0
H_AR = (0.98, 0.08, 0.3)  # log-volatility regime
SEC_DRIFT_AR = (0.985, 0.022, 0.15)
OWN_DRIFT_AR = (0.98, 0.03, 0.15)


@dataclass(frozen=True)
class _Structure:
    """What of the universe shapes the bars: symbols in order, each one's role, basket and (inverse) index."""

    symbols: tuple[str, ...]
    role: tuple[str, ...]  # stock | index | inverse
    basket: tuple[int, ...]  # the basket's index, -1 for a stock outside every basket
    index_col: tuple[int, ...]  # an inverse ETF's index column, -1 otherwise
    n_baskets: int  # at least 1 (the sector arrays keep a column when there is no basket)


def _structure(universe: Universe) -> _Structure:
    symbols = tuple(universe.all_symbols)
    roles: dict[str, tuple[str, int]] = {}
    for i, b in enumerate(universe.baskets):
        for m in b.members:
            roles[m] = ("stock", i)
        roles[b.index_etf] = ("index", i)
        roles[b.inverse_etf] = ("inverse", i)
    role = tuple(roles.get(s, ("stock", -1))[0] for s in symbols)
    basket = tuple(roles.get(s, ("stock", -1))[1] for s in symbols)
    index_col = tuple(symbols.index(universe.baskets[b].index_etf) if r == "inverse" else -1
                      for r, b in zip(role, basket, strict=True))
    return _Structure(symbols, role, basket, index_col, max(1, len(universe.baskets)))


def universe_key(universe: Universe) -> int:
    """A stable 32-bit key of what of ``universe`` shapes the bars (the same in every process and Python)."""
    st = _structure(universe)
    text = json.dumps([list(st.symbols), list(st.role), list(st.basket), list(st.index_col)], separators=(",", ":"))
    return zlib.crc32(text.encode())


# ---------------------------------------------------------------- the daily level
@dataclass(frozen=True)
class _Levels:
    """Per weekday from ``EPOCH`` (row = weekdays since it) and symbol: the log open relative to the start price
    (level + overnight gap) and the session's open-to-close move."""

    open_log: np.ndarray
    move: np.ndarray


def _weekday_index(day: date) -> int:
    return int(np.busday_count(EPOCH, day))


def _ar1_sd(n: int, weights: np.ndarray, phi: float, shock: float, x0: float) -> float:
    """sd of sum_t weights[t] * x_t for an AR(1) x of ``n`` steps from x_{-1} ~ N(0, x0^2) (exact, by its
    covariance matrix)."""
    t = np.arange(n)
    p2 = phi ** (2 * (t + 1))
    var = p2 * x0**2 + shock**2 * (1 - p2) / (1 - phi**2)
    lag = np.abs(t[:, None] - t[None, :])
    cov = phi**lag * var[np.minimum(t[:, None], t[None, :])]
    return float(np.sqrt(weights @ cov @ weights))


@lru_cache(maxsize=8)
def _day_scales(minute_vol: float, jump_prob: float) -> dict[str, float]:
    """The sd over a full session of each part of the intraday model's open-to-close return (log): what the
    daily level draws its moves with, so the bridge bends an ordinary day's path by an ordinary amount."""
    n = _FULL_SESSION
    u = _u_vol(n)
    h_phi, h_shock, h_x0 = H_AR
    t = np.arange(n)
    h_var = (h_phi ** (2 * (t + 1))) * h_x0**2 + h_shock**2 * (1 - h_phi ** (2 * (t + 1))) / (1 - h_phi**2)
    w = u * np.exp(h_var)  # sqrt(E[exp(2h)]) of a zero-mean normal h is exp(var h)
    white = float(np.sqrt(np.sum(w**2))) * minute_vol
    return {
        "mkt": MKT_SD * white,
        "sector": SECTOR_SD * white,
        "sec_drift": DRIFT_LOAD * _ar1_sd(n, w, *SEC_DRIFT_AR) * minute_vol,
        "own_drift": DRIFT_LOAD * _ar1_sd(n, w, *OWN_DRIFT_AR) * minute_vol,
        "idio_stock": IDIO_STOCK * white,
        "idio_index": IDIO_INDEX * white,
        "jumps": float(np.sqrt(jump_prob)) * JUMP_SD * white,
    }


@lru_cache(maxsize=8)
def _levels(seed: int, st: _Structure, key: int, minute_vol: float, jump_prob: float) -> _Levels:
    """Every weekday's level from ``EPOCH`` to the calendar's end (see the module docstring)."""
    n_sym, k, last = len(st.symbols), st.n_baskets, CALENDAR_END
    years = range(EPOCH.year, last.year + 1)
    # the draws of every calendar day of a year (row = day of the year), one generator per year: a day's draws
    # never depend on how far the walk is computed
    width = 2 * (1 + 2 * k + n_sym)
    draws = []
    for y in years:
        rng = np.random.default_rng([seed, key, _STREAM_LEVEL, y])
        draws.append(rng.standard_normal((366, width)))
    all_days = np.arange(np.datetime64(EPOCH), np.datetime64(last + timedelta(days=1)))
    weekdays = all_days[np.is_busday(all_days, weekmask="1111100", holidays=[])]
    yy = weekdays.astype("datetime64[Y]").astype(int) + 1970 - EPOCH.year
    doy = (weekdays - weekdays.astype("datetime64[Y]").astype("datetime64[D]")).astype(int)
    z = np.stack(draws)[yy, doy]  # (weekdays, width)
    mkt, sector, sec_drift, own = z[:, 0], z[:, 1:1 + k], z[:, 1 + k:1 + 2 * k], z[:, 1 + 2 * k:1 + 2 * k + n_sym]
    g = z[:, width // 2:]
    g_mkt, g_sector, g_own = g[:, 0], g[:, 1:1 + k], g[:, 1 + 2 * k:1 + 2 * k + n_sym]
    sc = _day_scales(minute_vol, jump_prob)
    move = np.empty((len(weekdays), n_sym))
    gap = np.empty_like(move)
    for j, (role, b) in enumerate(zip(st.role, st.basket, strict=True)):
        if role == "inverse":
            continue
        if role == "index":
            move[:, j] = (sc["mkt"] * mkt + sc["sector"] * sector[:, b] + sc["sec_drift"] * sec_drift[:, b]
                          + sc["idio_index"] * own[:, j])
            gap[:, j] = GAP_SD * (0.6 * g_mkt + 0.5 * g_sector[:, b] + 0.15 * g_own[:, j])
            continue
        own_sd = float(np.sqrt(sc["idio_stock"] ** 2 + sc["own_drift"] ** 2 + sc["jumps"] ** 2))
        move[:, j] = sc["mkt"] * mkt + own_sd * own[:, j]
        if b >= 0:  # a basket member: its sector's factor and drift too
            move[:, j] += sc["sector"] * sector[:, b] + sc["sec_drift"] * sec_drift[:, b]
            gap[:, j] = GAP_SD * (0.6 * g_mkt + 0.5 * g_sector[:, b] + 0.62 * g_own[:, j])
        else:
            gap[:, j] = GAP_SD * (0.6 * g_mkt + 0.8 * g_own[:, j])
    for j, role in enumerate(st.role):
        if role == "inverse":
            move[:, j] = -3.0 * move[:, st.index_col[j]]
            gap[:, j] = -3.0 * gap[:, st.index_col[j]]
    # y[d + 1] = PHI y[d] + gap[d] + move[d], y[0] = 0: the session's own move is what brings it to the next
    # reference, so the mean reversion is part of the move the intraday path must end on
    y = _ar1_walk(gap + move, LEVEL_PHI)
    return _Levels(open_log=y[:-1] + gap, move=move + (LEVEL_PHI - 1.0) * y[:-1])


def _ar1_walk(e: np.ndarray, phi: float, block: int = 100) -> np.ndarray:
    """y[0] = 0, y[t + 1] = phi y[t] + e[t] along axis 0, in closed form per block of ``block`` steps
    (``LEVEL_PHI``^-100 is about e: no precision is lost) instead of a Python loop over 12,000 weekdays."""
    y = np.empty((len(e) + 1, *e.shape[1:]))
    y[0] = 0.0
    for a in range(0, len(e), block):
        seg = e[a:a + block]
        k = np.arange(1, len(seg) + 1, dtype=float).reshape(-1, *([1] * (e.ndim - 1)))
        y[a + 1:a + 1 + len(seg)] = phi**k * (y[a] + np.cumsum(seg * phi ** (-k), axis=0))
    return y


def _u_vol(n: int) -> np.ndarray:
    x = np.linspace(-1.0, 1.0, n)
    return 0.75 + 0.6 * x**2


class SyntheticMarket:
    def __init__(self, seed: int, universe: Universe = DEFAULT_UNIVERSE, anchor: date | None = None,
                 start_prices: dict[str, float] | None = None, minute_vol: float = 0.0011,
                 jump_prob: float = 0.003) -> None:
        self.seed = int(seed)
        self.universe = universe
        self.anchor = anchor or date(2025, 1, 2)  # the first session of frame_for_sessions; the bars ignore it
        self.minute_vol = float(minute_vol)
        self.jump_prob = float(jump_prob)
        self.symbols = universe.all_symbols
        self._st = _structure(universe)
        self.universe_key = universe_key(universe)
        prices = {**DEFAULT_PRICES, **(start_prices or {})}
        self._log_p0 = np.log(np.array([prices.get(s, 100.0) for s in self.symbols], dtype=float))
        self._days: OrderedDict[date, _Day] = OrderedDict()  # the latest sessions asked for, at most _KEEP_DAYS
        self._build_loadings()

    # ---------------------------------------------------------------- structure
    def _build_loadings(self) -> None:
        """Per-symbol weights of the day's draws (vectors and [symbol, basket] matrices), from the roles."""
        st, n_sym, k = self._st, len(self.symbols), self._st.n_baskets
        stock = np.array([r == "stock" for r in st.role])
        index = np.array([r == "index" for r in st.role])
        self._w_mkt = (stock | index).astype(float)
        self._w_sector = np.zeros((n_sym, k))
        for j, b in enumerate(st.basket):
            if b >= 0 and st.role[j] != "inverse":
                self._w_sector[j, b] = 1.0
        self._w_sec_drift = DRIFT_LOAD * self._w_sector
        self._w_idio = np.where(stock, IDIO_STOCK, np.where(index, IDIO_INDEX, 0.0))
        self._w_own = np.where(stock, DRIFT_LOAD, 0.0)
        self._is_stock = stock
        self._inverse = [(j, st.index_col[j]) for j, r in enumerate(st.role) if r == "inverse"]
        self._base_v = np.array([BASE_VOLUME.get(s, 50_000) for s in self.symbols], dtype=float)

    def baskets_or_one(self) -> tuple:
        return self.universe.baskets or (None,)

    # ---------------------------------------------------------------- generation
    def _draw_day(self, day: date) -> dict[str, Any]:
        """Every random number of one session's intraday path, from its own generator: (seed, universe, date)."""
        bounds = session_bounds(day)
        assert bounds is not None
        open_, close = (b.astimezone(UTC) for b in bounds)
        n = int((close - open_).total_seconds() // 60)
        rng = np.random.default_rng([self.seed, self.universe_key, _STREAM_DAY, day.toordinal()])
        k, s_n = self._st.n_baskets, len(self.symbols)
        d: dict[str, Any] = {"day": day, "open": open_, "n": n}
        # log-volatility regime shared by the market
        d["h"] = (rng.normal(0, H_AR[1], n), rng.normal(0, H_AR[2]))
        d["mkt"] = rng.normal(0, 1, n) * MKT_SD
        d["sector"] = rng.normal(0, 1, (n, k)) * SECTOR_SD
        # drift episodes: persistent, partly shared by the sector (so baskets trend together)
        d["sec_drift"] = (rng.normal(0, SEC_DRIFT_AR[1], (n, k)), rng.normal(0, SEC_DRIFT_AR[2], k))
        d["own_drift"] = (rng.normal(0, OWN_DRIFT_AR[1], (n, s_n)), rng.normal(0, OWN_DRIFT_AR[2], s_n))
        d["idio"] = rng.normal(0, 1, (n, s_n))
        hit = (rng.random((n, s_n)) < self.jump_prob) & self._is_stock  # stocks jump; an ETF moves with its index
        d["jumps"] = np.zeros((n, s_n))
        d["jumps"][hit] = rng.normal(0, JUMP_SD, int(hit.sum()))
        d["wick"] = rng.normal(0, 0.35, (n, s_n))
        d["wick2"] = rng.normal(0, 0.35, (n, s_n))
        d["volume_noise"] = rng.normal(0, 0.25, (n, s_n))
        return d

    def _build_day(self, d: dict[str, Any], h: np.ndarray, sec_drift: np.ndarray, own_drift: np.ndarray,
                   open_log: np.ndarray, move: np.ndarray) -> _Day:
        """One session's bars from its draws and AR(1) paths, opening at ``open_log`` (log price) and moving
        ``move`` (log) from the first open to the last close."""
        n, vol = d["n"], self.minute_vol
        idio, jumps = d["idio"], d["jumps"]
        u_vol = _u_vol(n)  # intraday U-shape of volatility and volume
        x = np.linspace(-1.0, 1.0, n)
        u_volume = 0.6 + 1.4 * x**2
        scale = (vol * u_vol * np.exp(h))[:, None]  # a minute's volatility: profile times the regime
        z = (d["mkt"][:, None] * self._w_mkt + d["sector"] @ self._w_sector.T + sec_drift @ self._w_sec_drift.T
             + idio * self._w_idio + own_drift * self._w_own + jumps)
        rets = z * scale
        for j, jj in self._inverse:  # -3x the index each minute, with a little noise of its own
            rets[:, j] = -3.0 * rets[:, jj] + IDIO_INVERSE * vol * idio[:, j]
        # the bridge: bent to end on the day's move, each minute by its share of the day's variance (the
        # same weights for every symbol, so an inverse ETF stays -3x its index)
        w = scale[:, 0] ** 2
        w /= w.sum()
        rets += w[:, None] * (move - rets.sum(axis=0))[None, :]
        log_close = open_log[None, :] + np.cumsum(rets, axis=0)
        close_px = np.exp(log_close)
        open_px = np.vstack([np.exp(open_log)[None, :], close_px[:-1]])
        high = np.maximum(open_px, close_px) * np.exp(np.abs(d["wick"]) * scale)
        low = np.minimum(open_px, close_px) * np.exp(-np.abs(d["wick2"]) * scale)
        move_z = np.abs(rets) / scale
        volume = self._base_v[None, :] * u_volume[:, None] * np.exp(d["volume_noise"])
        volume *= 1.0 + 0.35 * np.maximum(move_z - 1.0, 0.0) + 3.0 * (jumps != 0)
        volume = np.maximum(1.0, np.round(volume))
        ts = int(d["open"].timestamp()) + 60 * np.arange(n, dtype=np.int64)
        return _Day(ts, open_px, high, low, close_px, volume)

    def _generate_days(self, days: list[date]) -> list[_Day]:
        """Sessions (any, in any order): draws per day, the three AR(1) paths of all of them at once (one pass
        over the minutes for the whole batch, the same arithmetic per element), then prices day by day."""
        lv = _levels(self.seed, self._st, self.universe_key, self.minute_vol, self.jump_prob)
        draws = [self._draw_day(day) for day in days]
        paths = {name: _ar1_batch([d[name][0] for d in draws], ar[0], [d[name][1] for d in draws])
                 for name, ar in (("h", H_AR), ("sec_drift", SEC_DRIFT_AR), ("own_drift", OWN_DRIFT_AR))}
        out = []
        for i, d in enumerate(draws):
            row = _weekday_index(d["day"])
            out.append(self._build_day(d, paths["h"][i], paths["sec_drift"][i], paths["own_drift"][i],
                                       self._log_p0 + lv.open_log[row], lv.move[row]))
        return out

    def _sessions(self, first_day: date, last_day: date) -> list[_Day]:
        """The bars of every session in [first_day, last_day]: kept ones, the others generated in batches."""
        first_day, last_day = max(first_day, CALENDAR_START), min(last_day, CALENDAR_END)
        if last_day < first_day:
            return []
        days = sessions_between(first_day, last_day)
        got: dict[date, _Day] = {}
        for day in days:
            kept = self._days.get(day)
            if kept is not None:
                got[day] = kept
        todo = [day for day in days if day not in got]
        for start in range(0, len(todo), _BATCH_DAYS):
            batch = todo[start:start + _BATCH_DAYS]
            got.update(zip(batch, self._generate_days(batch), strict=True))
        # a year of bars is the feed's to keep, not ours: the latest sessions asked for stay
        for day in days[-_KEEP_DAYS:]:
            self._days[day] = got[day]
            self._days.move_to_end(day)
        while len(self._days) > _KEEP_DAYS:
            self._days.popitem(last=False)
        return [got[day] for day in days]

    # ---------------------------------------------------------------- MarketData
    def bars(self, symbols: Sequence[str], start: datetime, end: datetime) -> pd.DataFrame:
        require_aware(start, end)
        start_utc, end_utc = start.astimezone(UTC), end.astimezone(UTC)
        if end_utc <= start_utc:
            return empty_bars()
        last_day = (end_utc - timedelta(microseconds=1)).astimezone(NY).date()
        parts = self._sessions(start_utc.astimezone(NY).date(), last_day)
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
        empty = (np.empty(0, dtype=np.int64), {c: np.empty((0, len(cols))) for c in PRICE_COLUMNS + ["volume"]})
        if hi <= lo:
            return empty
        last_day = (end.astimezone(UTC) - timedelta(microseconds=1)).astimezone(NY).date()
        parts = self._sessions(start.astimezone(NY).date(), last_day)
        if not parts:
            return empty
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
        """The long-format bars of ``days`` sessions from ``anchor``."""
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


def _ar1_batch(shocks: list[np.ndarray], phi: float, x0: list[Any], block: int = 48) -> list[np.ndarray]:
    """x_t = phi x_{t-1} + e_t along axis 0 of each array (from x_{-1} = its x0), all arrays at once and without a
    loop over the minutes: in closed form per block of ``block`` minutes, x_{a+k} = phi^(k+1) (x_{a-1} +
    sum_{i<=k} phi^-(i+1) e_{a+i}) (phi^-48 is at most about 3 for the phis used: no precision lost). Blocks start
    at fixed minutes of the session and every element sees only its own numbers, so a session's path does not
    depend on the sessions generated with it."""
    n_max = max(len(a) for a in shocks)
    tail = shocks[0].shape[1:]
    e = np.zeros((n_max, len(shocks), *tail))
    for i, a in enumerate(shocks):
        e[: len(a), i] = a  # sessions shorter than the longest (early closes) run on zeros past their end
    prev = np.stack([np.asarray(x, dtype=float) * np.ones(tail) for x in x0])
    out = np.empty_like(e)
    k = np.arange(1, block + 1, dtype=float).reshape(-1, *([1] * (e.ndim - 1)))
    up, down = phi**k, phi ** (-k)
    for a in range(0, n_max, block):
        m = min(block, n_max - a)
        out[a:a + m] = up[:m] * (prev + np.cumsum(e[a:a + m] * down[:m], axis=0))
        prev = out[a + m - 1]
    return [out[: len(a), i] for i, a in enumerate(shocks)]

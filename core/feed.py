"""Scored bars the engine looks up by time: one object for live and replay.

``MarketFeed`` pulls bars from a ``MarketData`` port in whole sessions, scores
them once with the strategy (vectorised), and keeps numpy arrays so the tick
path is a binary search, not a DataFrame query. It never reveals a bar before
it has closed: at ``now`` the latest visible bar is the one whose minute ended
at or before ``now``.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from core.clock import NY, UTC, session_bounds, trading_date
from core.strategy import Strategy
from core.venues.marketdata import MarketData

BAR_S = 60
LIVE_GRACE_S = 5.0  # a live vendor publishes a minute bar a few seconds after the minute ends
PRICE_LOOKBACK = 500  # bars: an older last close is no price (a halted or delisted symbol)
LIVE_WARMUP_DAYS = 4  # history fetched on the first live load (covers a long weekend of warm-up bars)


class Observation(NamedTuple):  # a tuple: built for every ticker of every tick
    symbol: str
    bar_ts: datetime
    score: float
    vol_spike: float
    close: float


class MarketFeed:
    def __init__(self, market: MarketData, strategy: Strategy, symbols: tuple[str, ...]) -> None:
        self.market = market
        self.strategy = strategy
        self.symbols = tuple(symbols)
        self.col = {s: i for i, s in enumerate(self.symbols)}
        self.ts = np.empty(0, dtype=np.int64)  # bar open, epoch seconds
        n = len(self.symbols)
        self.open = np.empty((0, n))
        self.high = np.empty((0, n))
        self.low = np.empty((0, n))
        self.close = np.empty((0, n))
        self.volume = np.empty((0, n))
        self.score = np.empty((0, n))
        self.vol_spike = np.empty((0, n))
        self._raw_tail: pd.DataFrame | None = None
        self.loaded_until: datetime | None = None  # bars with open < this are loaded
        self._last_key: tuple[int, int] | None = None
        self._last_idx = -1
        self._lv: np.ndarray | None = None  # see _last_valid
        self._last_now: datetime | None = None
        self._last_n = -1
        self._row_key: tuple[int, int] | None = None  # see _row
        self._row_val: Any = None
        self._row_at_key: tuple[datetime, int, int] | None = None  # see row_at
        self._row_at_val: Any = None

    # ------------------------------------------------------------ loading
    def load(self, start: datetime, end: datetime) -> None:
        """Load and score bars in [start, end), appending to what is loaded."""
        if self.loaded_until is not None:
            start = max(start, self.loaded_until)
        if end <= start:
            return
        score_wide = getattr(self.strategy, "score_wide", None)
        if getattr(self.market, "bars_wide", None) is not None and score_wide is not None:
            self._load_wide(start, end, score_wide)
            return
        new = self.market.bars(self.symbols, start, end)
        self.loaded_until = end
        if new.empty:
            return
        tail = self._raw_tail
        frame = new if tail is None or tail.empty else pd.concat([tail, new], ignore_index=True)
        if score_wide is not None:
            # a live source's bars come long (Alpaca's, a minute at a time): made wide once and scored as the
            # synthetic market's are. The long form cost ~0.18 s a minute (seven pivots and a long-format score)
            self._adopt(end, self._scored_arrays(*self._wide_arrays(new), score_wide))
        else:
            scored = self.strategy.score_bars(frame)
            n_tail = 0 if tail is None else len(tail)
            scored = scored.iloc[n_tail:]
            self._append(new, scored)
        # Keep enough raw history to score the next chunk causally.
        keep = self.strategy.warmup_bars + 5
        last_ts = np.sort(frame["timestamp"].unique())[-keep:]
        self._raw_tail = frame[frame["timestamp"].isin(last_ts)].reset_index(drop=True)

    def _load_wide(self, start: datetime, end: datetime, score_wide: Any) -> None:
        """``load`` for a source that has its bars as arrays (the synthetic market): the same window as the long
        format's (the last ``warmup_bars + 5`` rows before the new ones) scored on wide arrays, without the
        pivots in between. A session's first live tick loads its day this way (unless ``prefetch`` did)."""
        self._adopt(end, self._scored_wide(start, end, score_wide))

    def _scored_wide(self, start: datetime, end: datetime, score_wide: Any) -> tuple[Any, ...] | None:
        """The bars of [start, end) and their scores, computed from the loaded tail without changing the feed."""
        ts, cols = self.market.bars_wide(self.symbols, start, end)  # type: ignore[attr-defined]
        return self._scored_arrays(ts, cols, score_wide)

    def _wide_arrays(self, bars: pd.DataFrame) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Long bars as ``bars_wide`` gives them: their times (seconds, ascending) and a (time x symbol) array per
        OHLCV column, NaN where a symbol has no bar."""
        secs = (pd.DatetimeIndex(bars["timestamp"]).as_unit("s").asi8).astype(np.int64)
        ts, row = np.unique(secs, return_inverse=True)
        col = pd.Index(self.symbols).get_indexer(bars["symbol"])
        ok = col >= 0
        cols = {}
        for name in ("open", "high", "low", "close", "volume"):
            a = np.full((len(ts), len(self.symbols)), np.nan)
            a[row[ok], col[ok]] = bars[name].to_numpy(dtype=float)[ok]
            cols[name] = a
        return ts, cols

    def _scored_arrays(self, ts: np.ndarray, cols: dict[str, Any], score_wide: Any) -> tuple[Any, ...] | None:
        keep = ts > self.ts[-1] if len(self.ts) else np.ones(len(ts), dtype=bool)
        if not keep.any():
            return None
        ts = ts[keep]
        new = {c: np.asarray(cols[c], dtype=float)[keep] for c in ("open", "high", "low", "close", "volume")}
        tail = min(len(self.ts), self.strategy.warmup_bars + 5)
        idx = pd.to_datetime(np.concatenate([self.ts[len(self.ts) - tail:], ts]), unit="s", utc=True)
        names = list(self.symbols)
        out = score_wide(pd.DataFrame(np.vstack([self.close[len(self.close) - tail:], new["close"]]), index=idx,
                                      columns=names),
                         pd.DataFrame(np.vstack([self.volume[len(self.volume) - tail:], new["volume"]]), index=idx,
                                      columns=names))
        missing = np.isnan(new["close"])
        score = out["score"].reindex(columns=names).to_numpy(dtype=float)[tail:]
        spike = out["vol_spike"].reindex(columns=names).to_numpy(dtype=float)[tail:]
        return ts, new, missing, score, spike

    def _adopt(self, end: datetime, scored: tuple[Any, ...] | None) -> None:
        """Append what ``_scored_wide`` computed; bars with open < ``end`` are then loaded."""
        self.loaded_until = end
        if scored is None:
            return
        ts, new, missing, score, spike = scored
        self.ts = np.concatenate([self.ts, ts.astype(np.int64)])
        for name in ("open", "high", "low", "close", "volume"):
            setattr(self, name, np.vstack([getattr(self, name), new[name]]))
        self.score = np.vstack([self.score, np.where(missing, np.nan, score)])
        self.vol_spike = np.vstack([self.vol_spike, np.where(missing, np.nan, spike)])

    def _append(self, bars: pd.DataFrame, scored: pd.DataFrame) -> None:
        ts_index, keep = self._append_wide(bars)
        sc = scored.assign(timestamp=bars["timestamp"].to_numpy(), symbol=bars["symbol"].to_numpy())
        self.score = np.vstack([self.score, self._wide(sc, "score", ts_index)[keep]])
        self.vol_spike = np.vstack([self.vol_spike, self._wide(sc, "vol_spike", ts_index)[keep]])

    def _wide(self, frame: pd.DataFrame, column: str, ts_index: pd.DatetimeIndex) -> np.ndarray:
        w = frame.pivot(index="timestamp", columns="symbol", values=column)
        return w.reindex(index=ts_index, columns=list(self.symbols)).to_numpy(dtype=float)

    def ensure(self, now: datetime) -> None:
        """Make sure every bar that has closed by ``now`` is loaded.

        Recorded and synthetic sources load whole NY days at a time (the lookups never reveal a bar
        before it closes). A live source (``market.live``) cannot serve the future: it is asked once
        per minute for the bars that have closed, with a few seconds of grace for the vendor.
        """
        if getattr(self.market, "live", False):
            grace = float(getattr(self.market, "grace_s", LIVE_GRACE_S))
            end = (now.astimezone(UTC) - timedelta(seconds=grace)).replace(second=0, microsecond=0)
            if self.loaded_until is not None and end <= self.loaded_until:
                return
            self.load(self.loaded_until or (end - timedelta(days=LIVE_WARMUP_DAYS)), end)
            return
        if self.loaded_until is not None and now <= self.loaded_until:
            return
        day = trading_date(now)
        end = datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=NY).astimezone(UTC)
        start = self.loaded_until or (end - timedelta(days=6))
        self.load(start, end)

    def prefetch(self, day_after: datetime, lock: Any) -> bool:
        """Load the New York day of ``day_after`` ahead of time, computing outside ``lock`` and appending under it.

        A session's first tick otherwise generates and scores the whole day inside the engine lock (0.25-0.4 s of
        the synthetic market: longer than the tick job's interval at SIM_SPEED=60, so APScheduler skipped the next
        runs and every job waiting for the lock was late). The bars stay invisible until they close (lookups are
        by time), so loading them early changes no decision. Only a wide-array source (the synthetic market) with
        a ``score_wide`` strategy, and only when the feed is loaded up to the start of that day; False otherwise
        or when a tick loaded it meanwhile."""
        score_wide = getattr(self.strategy, "score_wide", None)
        if getattr(self.market, "live", False) or getattr(self.market, "bars_wide", None) is None \
                or score_wide is None or self.loaded_until is None:
            return False
        end = datetime.combine(trading_date(day_after) + timedelta(days=1), datetime.min.time(),
                               tzinfo=NY).astimezone(UTC)
        start = self.loaded_until
        if end <= start:
            return False
        scored = self._scored_wide(start, end, score_wide)  # the slow part, while ticks go on
        with lock:
            if self.loaded_until != start:  # a tick got there first
                return False
            self._adopt(end, scored)
        return True

    def preload_sessions(self, days: list[date], chunk_sessions: int = 21) -> None:
        """Replay: load every session, scored in one pass over all history.

        A strategy with ``score_wide`` is fed wide arrays built chunk by chunk (a year of long-format bars
        and its Timestamp objects never sit in memory at once); the scores equal ``score_bars`` on the
        whole history, cell for cell.
        """
        if not days:
            return
        first = session_bounds(days[0])
        start = (first[0] if first else datetime.combine(days[0], datetime.min.time(), tzinfo=NY)).astimezone(UTC)
        start -= timedelta(days=5)  # warm-up bars from the sessions before
        end = datetime.combine(days[-1] + timedelta(days=1), datetime.min.time(), tzinfo=NY).astimezone(UTC)
        score_wide = getattr(self.strategy, "score_wide", None)
        if score_wide is None or self.loaded_until is not None:
            self.load(start, end)
            return
        if getattr(self.market, "bars_wide", None) is not None and not len(self.ts):
            self._preload_wide(start, end, score_wide)
            return
        edges = [start] + [
            datetime.combine(d + timedelta(days=1), datetime.min.time(), tzinfo=NY).astimezone(UTC)
            for d in days[chunk_sessions - 1:-1:chunk_sessions]] + [end]
        last = None
        for a, b in zip(edges, edges[1:], strict=False):
            bars = self.market.bars(self.symbols, a, b)
            if not bars.empty:
                self._append_wide(bars)
                last = bars
        self.loaded_until = end
        if last is None:
            return
        idx, cols = pd.Index(self.ts), list(self.symbols)
        out = score_wide(pd.DataFrame(self.close, index=idx, columns=cols),
                         pd.DataFrame(self.volume, index=idx, columns=cols))
        missing = np.isnan(self.close)  # no bar: no score, as score_bars gives no row
        self.score = np.where(missing, np.nan, out["score"].reindex(columns=cols).to_numpy(dtype=float))
        self.vol_spike = np.where(missing, np.nan, out["vol_spike"].reindex(columns=cols).to_numpy(dtype=float))
        keep = self.strategy.warmup_bars + 5
        tail_ts = np.sort(last["timestamp"].unique())[-keep:]
        self._raw_tail = last[last["timestamp"].isin(tail_ts)].reset_index(drop=True)

    def _preload_wide(self, start: datetime, end: datetime, score_wide: Any) -> None:
        """A source that has its bars as arrays already (the synthetic market): no long format at all."""
        ts, cols = self.market.bars_wide(self.symbols, start, end)  # type: ignore[attr-defined]
        self.loaded_until = end
        if not len(ts):
            return
        self.ts = ts.astype(np.int64)
        self.open, self.high, self.low, self.close, self.volume = (
            np.ascontiguousarray(cols[c], dtype=float) for c in ("open", "high", "low", "close", "volume"))
        idx, names = pd.to_datetime(self.ts, unit="s", utc=True), list(self.symbols)
        out = score_wide(pd.DataFrame(self.close, index=idx, columns=names, copy=False),  # views, not copies
                         pd.DataFrame(self.volume, index=idx, columns=names, copy=False))
        missing = np.isnan(self.close)
        self.score = np.where(missing, np.nan, out.pop("score").reindex(columns=names).to_numpy(dtype=float))
        self.vol_spike = np.where(missing, np.nan, out.pop("vol_spike").reindex(columns=names).to_numpy(dtype=float))
        keep = self.strategy.warmup_bars + 5
        first = datetime.fromtimestamp(int(self.ts[max(0, len(self.ts) - keep)]), UTC)
        self._raw_tail = self.market.bars(self.symbols, first, end)

    def _append_wide(self, bars: pd.DataFrame) -> tuple[pd.DatetimeIndex, np.ndarray]:
        """Append bars as wide OHLCV rows (bars already loaded are skipped); the caller adds the scores."""
        ts_index = pd.DatetimeIndex(np.sort(bars["timestamp"].unique()))
        new_ts = (ts_index.as_unit("s").asi8).astype(np.int64)
        keep = new_ts > self.ts[-1] if len(self.ts) else np.ones(len(new_ts), dtype=bool)
        self.ts = np.concatenate([self.ts, new_ts[keep]])
        for name in ("open", "high", "low", "close", "volume"):
            setattr(self, name, np.vstack([getattr(self, name), self._wide(bars, name, ts_index)[keep]]))
        return ts_index, keep

    # ------------------------------------------------------------ lookups
    def last_index(self, now: datetime) -> int:
        """Index of the latest bar that has closed by ``now`` (-1 if none); memoised for the current tick."""
        if now is self._last_now and len(self.ts) == self._last_n:  # the same tick asks again
            return self._last_idx
        self._last_now, self._last_n = now, len(self.ts)
        t = int(now.timestamp())
        key = (t, len(self.ts))
        if key == self._last_key:
            return self._last_idx
        self._last_key = key
        self._last_idx = int(np.searchsorted(self.ts, t - BAR_S, side="right")) - 1
        return self._last_idx

    def observe(self, symbol: str, now: datetime, max_age_s: int = 600) -> Observation | None:
        j = self.col.get(symbol)
        row = self.row_at(now, max_age_s)
        if row is None or j is None:
            return None
        bar_ts, score, spike, close = row
        return Observation(symbol=symbol, bar_ts=bar_ts, score=score[j], vol_spike=spike[j], close=close[j])

    def row_at(self, now: datetime, max_age_s: int = 600) -> tuple[datetime, list[float], list[float],
                                                                    list[float]] | None:
        """The latest closed bar of every symbol as (bar time, scores, volume spikes, closes) in ``symbols``
        order, or None when there is no fresh bar (e.g. before the open): what ``observe`` reads, once a tick."""
        key = (now, max_age_s, len(self.ts))
        if self._row_at_key is not None and key[0] is self._row_at_key[0] and key[1:] == self._row_at_key[1:]:
            return self._row_at_val  # every ticker of a tick asks with the same ``now``
        i = self.last_index(now)
        fresh = i >= 0 and now.timestamp() - (int(self.ts[i]) + BAR_S) <= max_age_s
        self._row_at_key, self._row_at_val = key, (self._row(i) if fresh else None)
        return self._row_at_val

    def _row(self, i: int) -> tuple[datetime, list[float], list[float], list[float]]:
        """Bar row ``i`` as Python values, kept while the ticks of one minute ask for it."""
        if self._row_key != (i, len(self.ts)):
            self._row_key = (i, len(self.ts))
            self._row_val = (datetime.fromtimestamp(int(self.ts[i]), UTC), self.score[i].tolist(),
                             self.vol_spike[i].tolist(), self.close[i].tolist())
        return self._row_val

    def price(self, symbol: str, now: datetime) -> float | None:
        """Last close of a completed bar (within the last ``PRICE_LOOKBACK`` bars); None if there is none."""
        i = self.last_index(now)
        j = self.col.get(symbol)
        if i < 0 or j is None:
            return None
        k = int(self._last_valid()[i, j])
        return float(self.close[k, j]) if k >= 0 and i - k < PRICE_LOOKBACK else None

    def _last_valid(self) -> np.ndarray:
        """Row index of the latest bar with a close at or before each row, per symbol (-1: none yet); rebuilt
        when bars were added. Every price lookup is then one array read instead of a scan."""
        if self._lv is None or len(self._lv) != len(self.close):
            rows = np.arange(len(self.close), dtype=np.int64)[:, None]
            self._lv = np.maximum.accumulate(np.where(np.isnan(self.close), -1, rows), axis=0)
        return self._lv

    def bars_between(self, symbol: str, after_s: int, now: datetime) -> tuple[np.ndarray, ...]:
        """(ts, open, high, low, close) of bars with open time >= after_s that have closed by now.

        A symbol the feed does not carry (a holding made outside the app, e.g. TQQQ) has no bars."""
        j = self.col.get(symbol)
        lo = int(np.searchsorted(self.ts, after_s, side="left"))
        hi = self.last_index(now) + 1
        if j is None or hi <= lo:
            e = np.empty(0)
            return self.ts[0:0], e, e, e, e
        sl = slice(lo, hi)
        return self.ts[sl], self.open[sl, j], self.high[sl, j], self.low[sl, j], self.close[sl, j]

    def next_open(self, symbol: str, after: datetime, now: datetime) -> tuple[int, float] | None:
        """The first bar opening at/after ``after`` whose open is known by ``now`` (bar open <= now)."""
        j = self.col.get(symbol)
        if j is None:
            return None
        i = int(np.searchsorted(self.ts, int(np.ceil(after.timestamp())), side="left"))
        while i < len(self.ts) and self.ts[i] <= now.timestamp():
            v = self.open[i, j]
            if not np.isnan(v):
                return int(self.ts[i]), float(v)
            i += 1
        return None

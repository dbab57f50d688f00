"""1-minute bars from Alpaca through alpaca-py's ``StockHistoricalDataClient``.

* ``feed``: ``iex`` by default (free accounts cannot query recent SIP data);
* alpaca-py follows ``next_page_token`` itself; every call goes through the same
  timeout / retry / request-budget policy as the broker (``AlpacaCaller``);
* timestamps come back tz-aware UTC; requests are always sent tz-aware (naive
  datetimes would be taken as UTC by Alpaca, which is how off-by-hours bugs start);
* ``history`` caches completed days as Parquet under ``data/cache/alpaca/<feed>/<symbol>/<day>.parquet``
  (an empty file for a symbol without bars that day) so research replays do not download the same day
  twice; with every day cached it sends nothing (building the client sends nothing either);
  ``cached_days`` says how much of a range is cached, from the files alone;
* ``keeper``: when the live engine's market is this object (``core.runtime.build_market``), every bar ``bars``
  returns goes to a ``LiveBarKeeper`` too, with where and when it was received (``bar_cache``); history
  downloads do not.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import pandas as pd
from alpaca.common.exceptions import APIError
from alpaca.data.enums import DataFeed
from alpaca.data.historical import StockHistoricalDataClient
from alpaca.data.requests import StockBarsRequest
from alpaca.data.timeframe import TimeFrame

from core.clock import UTC, session_bounds, sessions_between, trading_date
from core.venues.alpaca.bar_cache import LiveBarKeeper, day_file, read_day_file, write_day_file
from core.venues.alpaca.broker import AlpacaCaller, api_message
from core.venues.broker import BrokerError
from core.venues.marketdata import BAR_COLUMNS, empty_bars, require_aware
from core.venues.sim.bar_files import validate_bars

log = logging.getLogger(__name__)


def make_data_client(api_key: str, secret_key: str, *, url_override: str | None,
                     timeout_s: float) -> StockHistoricalDataClient:
    import functools

    client = StockHistoricalDataClient(api_key, secret_key, url_override=url_override)
    client._retry = 0
    client._session.request = functools.partial(client._session.request, timeout=timeout_s)  # type: ignore[method-assign]
    return client


class AlpacaMarketData:
    live = True  # the feed loads it minute by minute, never ahead of the clock

    def __init__(self, client: StockHistoricalDataClient, *, caller: AlpacaCaller, feed: str = "iex",
                 cache_dir: str | Path | None = "data/cache/alpaca", grace_s: float = 5.0) -> None:
        self.client = client
        self.grace_s = grace_s  # seconds after a minute ends before its bar is asked for
        self.call = caller
        self.feed = DataFeed(feed)
        self.cache_dir = Path(cache_dir) / feed if cache_dir else None
        self.requests = 0
        self.keeper: LiveBarKeeper | None = None  # the live engine's: every bar it is served is kept

    def bars(self, symbols: Sequence[str], start: datetime, end: datetime) -> pd.DataFrame:
        """Bars with start <= timestamp < end (Alpaca's ``end`` is inclusive; the last instant is cut here)."""
        got = self._fetch(symbols, start, end)
        if self.keeper is not None:
            self.keeper.add(got)  # in memory only: written by the runtime off the tick (bar_cache)
        return got

    def _fetch(self, symbols: Sequence[str], start: datetime, end: datetime) -> pd.DataFrame:
        require_aware(start, end)
        if end <= start or not symbols:
            return empty_bars()
        req = StockBarsRequest(symbol_or_symbols=list(symbols), timeframe=TimeFrame.Minute,
                               start=start.astimezone(UTC), end=end.astimezone(UTC), feed=self.feed)
        self.requests += 1
        try:
            barset = self.call("bars", lambda: self.client.get_stock_bars(req))
        except APIError as e:
            raise BrokerError(f"bars: HTTP {e.status_code} {api_message(e)[1]}") from None
        df = barset.df  # type: ignore[union-attr]
        if df is None or df.empty:
            return empty_bars()
        df = df.reset_index()[["timestamp", "symbol", "open", "high", "low", "close", "volume"]]
        df["timestamp"] = pd.to_datetime(df["timestamp"], utc=True).dt.as_unit("ns")
        df = df[(df["timestamp"] >= pd.Timestamp(start)) & (df["timestamp"] < pd.Timestamp(end))]
        if df.empty:
            return empty_bars()
        # the broker's data is checked like a file: a bad bar is an error with its row, not a silent trade
        return validate_bars(df.reset_index(drop=True), "alpaca bars")[BAR_COLUMNS]

    # ------------------------------------------------------------ research history with a Parquet cache
    def _day_file(self, symbol: str, day: date) -> Path | None:
        return None if self.cache_dir is None else day_file(self.cache_dir, symbol, day)

    def _read_day(self, symbol: str, day: date) -> pd.DataFrame | None:
        """The cached bars of one symbol and day (possibly none: a halted or unknown symbol), or None if not cached
        (or the file cannot be used: it is asked again). Extra columns (a file with provenance) are left out."""
        f = self._day_file(symbol, day)
        return None if f is None else read_day_file(f)

    def _write_day(self, symbol: str, day: date, frame: pd.DataFrame) -> None:
        f = self._day_file(symbol, day)
        if f is not None:
            # written aside then renamed: a crash mid-write never leaves a truncated day that reads as complete
            write_day_file(f, frame[BAR_COLUMNS])

    def cached_days(self, symbols: Sequence[str], first: date, last: date) -> CacheCoverage:
        """Which sessions of [first, last] the cache holds for every symbol, for some, or for none (no network)."""
        syms = list(dict.fromkeys(symbols))
        full: list[date] = []
        partial: list[date] = []
        missing: list[date] = []
        for day in sessions_between(first, last):
            files = [self._day_file(sym, day) for sym in syms]
            have = sum(1 for f in files if f is not None and f.exists())
            (full if have == len(syms) else partial if have else missing).append(day)
        return CacheCoverage(tuple(full), tuple(partial), tuple(missing))

    def history(self, symbols: Sequence[str], first: date, last: date, *, today: date | None = None,
                progress: Callable[[int, int], None] | None = None) -> pd.DataFrame:
        """Regular-session bars of [first, last]; completed days come from (and go to) the Parquet cache.

        One request per session (alpaca-py follows the pages) for the symbols not cached that day; none at all
        when every day is cached. A completed day (``day < today``) is cached per symbol, also when the symbol
        has no bars that day, so it is not asked again. ``progress(done, total)`` runs after each session.
        """
        syms = list(dict.fromkeys(symbols))  # a symbol named twice would read its cached days twice
        today = today or trading_date(datetime.now(UTC))
        days = sessions_between(first, last)
        frames: list[pd.DataFrame] = []
        for done, day in enumerate(days, 1):
            missing = []
            for sym in syms:
                cached = self._read_day(sym, day)
                if cached is None:
                    missing.append(sym)
                elif not cached.empty:
                    frames.append(cached)
            if missing:
                bounds = session_bounds(day)
                assert bounds is not None  # sessions_between yields sessions only
                got = self._fetch(missing, bounds[0], bounds[1])  # history: not live bars
                if not got.empty:
                    frames.append(got)
                if day < today:  # only completed days are final
                    for sym in missing:
                        self._write_day(sym, day, got[got["symbol"] == sym])
            if progress is not None:
                progress(done, len(days))
        if not frames:
            return empty_bars()
        out = pd.concat(frames, ignore_index=True)
        return out.sort_values(["timestamp", "symbol"], kind="stable").reset_index(drop=True)


@dataclass(frozen=True)
class CacheCoverage:
    """Sessions of a range by what the Parquet cache holds: every symbol (full), some (partial), none (missing)."""

    full: tuple[date, ...]
    partial: tuple[date, ...]
    missing: tuple[date, ...]

    @property
    def days(self) -> int:
        return len(self.full) + len(self.partial) + len(self.missing)

    def __str__(self) -> str:
        return f"{len(self.full)} of {self.days} days cached"

"""1-minute bars from Alpaca through alpaca-py's ``StockHistoricalDataClient``.

* ``feed``: ``iex`` by default (free accounts cannot query recent SIP data);
* alpaca-py follows ``next_page_token`` itself; every call goes through the same
  timeout / retry / request-budget policy as the broker (``AlpacaCaller``);
* timestamps come back tz-aware UTC; requests are always sent tz-aware (naive
  datetimes would be taken as UTC by Alpaca, which is how off-by-hours bugs start);
* ``history`` caches completed days as Parquet under ``data/cache/alpaca/<feed>/``
  so research replays do not download the same day twice.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import date, datetime
from pathlib import Path

import pandas as pd
from alpaca.common.exceptions import APIError
from alpaca.data.enums import DataFeed
from alpaca.data.historical import StockHistoricalDataClient
from alpaca.data.requests import StockBarsRequest
from alpaca.data.timeframe import TimeFrame

from core.clock import UTC, session_bounds, sessions_between, trading_date
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

    def bars(self, symbols: Sequence[str], start: datetime, end: datetime) -> pd.DataFrame:
        """Bars with start <= timestamp < end (Alpaca's ``end`` is inclusive; the last instant is cut here)."""
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
        return None if self.cache_dir is None else self.cache_dir / symbol / f"{day.isoformat()}.parquet"

    def history(self, symbols: Sequence[str], first: date, last: date, *, today: date | None = None) -> pd.DataFrame:
        """Regular-session bars of [first, last]; completed days come from (and go to) the Parquet cache."""
        frames: list[pd.DataFrame] = []
        today = today or trading_date(datetime.now(UTC))
        for day in sessions_between(first, last):
            bounds = session_bounds(day)
            if bounds is None:
                continue
            missing = []
            for sym in symbols:
                f = self._day_file(sym, day)
                if f is not None and f.exists():
                    frames.append(pd.read_parquet(f))
                else:
                    missing.append(sym)
            if not missing:
                continue
            got = self.bars(missing, bounds[0], bounds[1])
            frames.append(got)
            if day < today:  # only completed days are final
                for sym in missing:
                    f = self._day_file(sym, day)
                    if f is not None:
                        f.parent.mkdir(parents=True, exist_ok=True)
                        got[got["symbol"] == sym].to_parquet(f, index=False)
        if not frames:
            return empty_bars()
        out = pd.concat([f for f in frames if not f.empty], ignore_index=True) if any(
            not f.empty for f in frames) else empty_bars()
        return out.sort_values(["timestamp", "symbol"], kind="stable").reset_index(drop=True)


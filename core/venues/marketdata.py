"""Market-data port: 1-minute bars in one long format for every source."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

import numpy as np
import pandas as pd

BAR_COLUMNS = ["timestamp", "symbol", "open", "high", "low", "close", "volume"]
PRICE_COLUMNS = ["open", "high", "low", "close"]


class BarDataError(ValueError):
    """Bad bar data; the message names the source, the row and what is wrong."""


class MarketData(Protocol):
    def bars(self, symbols: Sequence[str], start: datetime, end: datetime) -> pd.DataFrame:
        """Long-format 1-minute bars (BAR_COLUMNS); ``timestamp`` is the bar's open time, tz-aware UTC.

        Rows with start <= timestamp < end, sorted by (timestamp, symbol), index 0..n-1.
        """
        ...


def empty_bars() -> pd.DataFrame:
    df = pd.DataFrame({c: pd.Series(dtype=float) for c in BAR_COLUMNS})
    df["timestamp"] = pd.Series(dtype="datetime64[ns, UTC]")
    df["symbol"] = pd.Series(dtype=object)
    return df[BAR_COLUMNS]


def ts_ns(series: pd.Series) -> np.ndarray:
    """UTC nanoseconds of a tz-aware timestamp column, whatever its stored unit."""
    return series.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy(dtype="datetime64[ns]").astype(np.int64)


def require_aware(*values: datetime) -> None:
    for v in values:
        if v.tzinfo is None:
            raise ValueError(f"naive datetime {v!r}: pass a timezone-aware value")


class FrameMarket:
    """A validated bars frame served by time slices (numpy searchsorted, no DataFrame scans)."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame.sort_values(["timestamp", "symbol"], kind="stable").reset_index(drop=True)
        self._ts = ts_ns(self.frame["timestamp"])

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(sorted(self.frame["symbol"].unique()))

    def bars(self, symbols: Sequence[str], start: datetime, end: datetime) -> pd.DataFrame:
        require_aware(start, end)
        lo = int(np.searchsorted(self._ts, pd.Timestamp(start).value, side="left"))
        hi = int(np.searchsorted(self._ts, pd.Timestamp(end).value, side="left"))
        out = self.frame.iloc[lo:hi]
        wanted = set(symbols)
        if wanted != set(self.symbols):
            out = out[out["symbol"].isin(wanted)]
        return out.reset_index(drop=True)

"""Bars from CSV or Parquet files, validated row by row before anything trades on them.

Timestamps: ISO 8601 with an offset, naive ISO (taken as UTC, as alpaca-py does), or
epoch seconds (years 1677-2262). Anything else is refused, "now" and "today" too (pandas
would read them as the wall clock). Prices must be finite and at least ``MIN_PRICE``,
volumes finite and >= 0, symbols non-blank; TRUE/FALSE columns are not numbers.
Errors name the file and the line (CSV: the file's line number, header = line 1;
Parquet: the 1-based row).
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from core.clock import NY
from core.venues.marketdata import BAR_COLUMNS, PRICE_COLUMNS, BarDataError, FrameMarket, ts_ns

MIN_PRICE = 0.0001  # the smallest US quote increment; 1e-300 passed "> 0" and then overflowed order sizing
_MAX_EPOCH_S = 9.2e9  # pandas' nanosecond range ends in 2262; beyond it to_datetime raises despite "coerce"


def load_bars(path: str | Path) -> pd.DataFrame:
    p = Path(path)
    if not p.exists():
        raise BarDataError(f"{p}: no such file")
    suffix = p.suffix.lower()
    try:
        if suffix == ".csv":
            raw = pd.read_csv(p, dtype={"symbol": str}, keep_default_na=True)
            offset, unit = 2, "line"  # header is line 1
        elif suffix in (".parquet", ".pq"):
            raw = pd.read_parquet(p)
            offset, unit = 1, "row"
        else:
            raise BarDataError(f"{p.name}: unsupported file type {suffix!r} (use .csv or .parquet)")
    except BarDataError:
        raise
    except Exception as e:  # pandas/pyarrow parse errors: say which file
        raise BarDataError(f"{p.name}: cannot read ({e})") from None
    return validate_bars(raw, p.name, first_row=offset, unit=unit)


def _where(source: str, unit: str, row: int) -> str:
    return f"{source} {unit} {row}"


def validate_bars(raw: pd.DataFrame, source: str, *, first_row: int = 1, unit: str = "row") -> pd.DataFrame:
    missing = [c for c in BAR_COLUMNS if c not in raw.columns]
    if missing:
        raise BarDataError(f"{source}: missing column(s) {', '.join(missing)}")
    df = raw[BAR_COLUMNS].copy()
    n = len(df)
    if n == 0:
        raise BarDataError(f"{source}: no rows")
    rows = np.arange(n) + first_row

    def fail(i: int, what: str) -> None:
        raise BarDataError(f"{_where(source, unit, int(rows[i]))}: {what}")

    # empty / NaN values
    for col in BAR_COLUMNS:
        bad = df[col].isna().to_numpy()
        if bad.any():
            fail(int(np.argmax(bad)), f"empty or NaN {col}")
    df["symbol"] = df["symbol"].astype(str).str.strip()
    bad = (df["symbol"] == "").to_numpy()
    if bad.any():
        fail(int(np.argmax(bad)), "blank symbol")
    # timestamps
    ts = df["timestamp"]
    if pd.api.types.is_numeric_dtype(ts) and not pd.api.types.is_bool_dtype(ts):
        secs = ts.astype(float)
        parsed = pd.to_datetime(secs.where(secs.abs() < _MAX_EPOCH_S), unit="s", utc=True, errors="coerce")
    else:
        text = ts.astype(str)
        # ISO 8601 only: "mixed" also read 03/04/2025 (which day?) and English dates
        parsed = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
        parsed = parsed.mask(text.str.strip().str.lower().isin(["now", "today"]))
    bad = parsed.isna().to_numpy()
    if bad.any():
        i = int(np.argmax(bad))
        fail(i, f"unparseable timestamp {df['timestamp'].iloc[i]!r}")
    df["timestamp"] = parsed.dt.as_unit("ns")
    # numbers
    for col in PRICE_COLUMNS + ["volume"]:
        if pd.api.types.is_bool_dtype(df[col]):  # TRUE/FALSE would otherwise read as 1.0/0.0
            fail(0, f"{col} is not a number: {df[col].iloc[0]!r}")
        num = pd.to_numeric(df[col], errors="coerce")
        bad = num.isna().to_numpy()
        if bad.any():
            i = int(np.argmax(bad))
            fail(i, f"{col} is not a number: {df[col].iloc[i]!r}")
        df[col] = num.astype(float)
        bad = ~np.isfinite(df[col].to_numpy())  # "inf", "1e400": an infinite price poisons every sum after it
        if bad.any():
            i = int(np.argmax(bad))
            fail(i, f"{col} is not finite: {raw[col].iloc[i]!r}")
    for col in PRICE_COLUMNS:
        bad = (df[col] <= 0).to_numpy()
        if bad.any():
            i = int(np.argmax(bad))
            fail(i, f"non-positive {col} {df[col].iloc[i]}")
        bad = (df[col] < MIN_PRICE).to_numpy()
        if bad.any():
            i = int(np.argmax(bad))
            fail(i, f"{col} {df[col].iloc[i]} is below the smallest price {MIN_PRICE}")
    bad = (df["volume"] < 0).to_numpy()
    if bad.any():
        i = int(np.argmax(bad))
        fail(i, f"negative volume {df['volume'].iloc[i]}")
    bad = (df["high"] < df["low"]).to_numpy()
    if bad.any():
        i = int(np.argmax(bad))
        fail(i, f"high {df['high'].iloc[i]} < low {df['low'].iloc[i]}")
    for col in ("open", "close"):
        bad = ((df[col] > df["high"]) | (df[col] < df["low"])).to_numpy()
        if bad.any():
            i = int(np.argmax(bad))
            fail(i, f"{col} {df[col].iloc[i]} outside [low, high]")
    # order and duplicates within a symbol, in file order
    tsv = ts_ns(df["timestamp"])
    for sym, idx in df.groupby("symbol", sort=False).indices.items():
        t = tsv[idx]
        d = np.diff(t)
        if (d == 0).any():
            i = int(idx[int(np.argmax(d == 0)) + 1])
            fail(i, f"duplicate timestamp {df['timestamp'].iloc[i].isoformat()} for {sym}")
        if (d < 0).any():
            i = int(idx[int(np.argmax(d < 0)) + 1])
            fail(i, f"out-of-order timestamp {df['timestamp'].iloc[i].isoformat()} for {sym} "
                    f"(after {df['timestamp'].iloc[int(idx[int(np.argmax(d < 0))])].isoformat()})")
    return df.sort_values(["timestamp", "symbol"], kind="stable").reset_index(drop=True)


class ReplayMarket(FrameMarket):
    """Bars from a file (or any validated frame) as a MarketData port."""

    @property
    def sessions(self) -> list[date]:
        days = self.frame["timestamp"].dt.tz_convert(NY).dt.date.unique()
        return sorted(days)

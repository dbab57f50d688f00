"""Bars from CSV or Parquet files, validated row by row before anything trades on them.

Timestamps: ISO 8601 with an offset, naive ISO (taken as UTC, as alpaca-py does), or
epoch seconds. Errors name the file and the line (CSV: the file's line number,
header = line 1; Parquet: the 1-based row).
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from core.clock import NY
from core.marketdata import BAR_COLUMNS, PRICE_COLUMNS, BarDataError, FrameMarket, ts_ns


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
    # timestamps
    ts = df["timestamp"]
    if pd.api.types.is_numeric_dtype(ts):
        parsed = pd.to_datetime(ts, unit="s", utc=True, errors="coerce")
    else:
        parsed = pd.to_datetime(ts.astype(str), utc=True, errors="coerce", format="mixed")
    bad = parsed.isna().to_numpy()
    if bad.any():
        i = int(np.argmax(bad))
        fail(i, f"unparseable timestamp {df['timestamp'].iloc[i]!r}")
    df["timestamp"] = parsed.dt.as_unit("ns")
    # numbers
    for col in PRICE_COLUMNS + ["volume"]:
        num = pd.to_numeric(df[col], errors="coerce")
        bad = num.isna().to_numpy()
        if bad.any():
            i = int(np.argmax(bad))
            fail(i, f"{col} is not a number: {df[col].iloc[i]!r}")
        df[col] = num.astype(float)
    for col in PRICE_COLUMNS:
        bad = (df[col] <= 0).to_numpy()
        if bad.any():
            i = int(np.argmax(bad))
            fail(i, f"non-positive {col} {df[col].iloc[i]}")
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

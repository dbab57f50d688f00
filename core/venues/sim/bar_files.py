"""Bars from CSV or Parquet files, validated row by row before anything trades on them.

Timestamps: ISO 8601 with an offset, naive ISO (taken as UTC, as alpaca-py does), or
epoch seconds (years 1677-2262). Anything else is refused, "now" and "today" too (pandas
would read them as the wall clock). Prices must be finite and at least ``MIN_PRICE``,
volumes finite and >= 0, symbols non-blank; TRUE/FALSE columns are not numbers.
A row's error names the file, where and the column: ``bars.csv line 7, column close: empty or NaN``.
CSV: the file's real line (the header's line is 1 unless blank lines precede it; blank and
whitespace-only lines, which pandas skips, are counted); Parquet: the 1-based row.
A file on disk (``load_bars``) and the same bytes uploaded (``load_bars_bytes``) give the same text.

A file holds at most ``MAX_ROWS`` rows and ``MAX_SYMBOLS`` symbols (checked before the rows are: a CSV's lines are
counted and a Parquet file's footer read before either is parsed), so one file cannot take the server's memory.
"""

from __future__ import annotations

import csv
import io
import re
from datetime import date
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import pandas as pd

from core.clock import NY
from core.venues.marketdata import BAR_COLUMNS, PRICE_COLUMNS, BarDataError, FrameMarket, ts_ns

MIN_PRICE = 0.0001  # the smallest US quote increment; 1e-300 passed "> 0" and then overflowed order sizing
_NS_MIN = pd.Timestamp.min.tz_localize("UTC")
_NS_MAX = pd.Timestamp.max.tz_localize("UTC")
_MAX_EPOCH_S = 9.2e9  # pandas' nanosecond range ends in 2262; beyond it to_datetime raises despite "coerce"
_CSV_SUFFIXES = (".csv",)
_PARQUET_SUFFIXES = (".parquet", ".pq")
_NEWLINE = re.compile(r"\r\n|\r|\n")  # the line ends pandas' C parser and csv(newline="") both split on
# A year of 1-minute bars is 260 sessions x 390 = 101,400 rows a symbol: 2,000,000 rows is a year of about 20
# symbols (a replay's universe is a few tiers of three), some 250 MB while the rows are checked; a 150 MB file
# took the server to 1.28 GB. 200 symbols is far more than a run trades and keeps the page's lists readable.
MAX_ROWS = 2_000_000
MAX_SYMBOLS = 200


class _BadRow(Exception):
    """A row-level problem at positional row ``index`` of the frame; the caller says where that is in the file."""

    def __init__(self, index: int, column: str, what: str) -> None:
        super().__init__(what)
        self.index, self.column, self.what = index, column, what


def _kind(name: str) -> str:
    suffix = PurePath(name).suffix.lower()
    if suffix in _CSV_SUFFIXES:
        return "csv"
    if suffix in _PARQUET_SUFFIXES:
        return "parquet"
    raise BarDataError(f"{PurePath(name).name}: unsupported file type {suffix!r} (use .csv or .parquet)")


def load_bars(path: str | Path) -> pd.DataFrame:
    p = Path(path)
    if not p.exists():
        raise BarDataError(f"{p}: no such file")
    _kind(p.name)  # refuse an unsupported file before reading it
    try:
        data = p.read_bytes()
    except OSError as e:
        raise BarDataError(f"{p.name}: cannot read ({e.strerror or type(e).__name__})") from None
    # one code path for files and uploads: the page and the CLI report exactly the same text
    return load_bars_bytes(data, p.name)


def load_bars_bytes(data: bytes, name: str) -> pd.DataFrame:
    """Bars from the bytes of an uploaded file; ``name``'s suffix picks CSV or Parquet, its base name is the source."""
    source = PurePath(name).name
    kind = _kind(name)
    try:
        if kind == "csv":
            # counted before pandas parses (and holds) them; the line breaks are a cheap upper bound of the rows
            if data.count(b"\n") + data.count(b"\r") >= MAX_ROWS and (n := _csv_rows(data)) > MAX_ROWS:
                _too_many(source, "rows", n, MAX_ROWS)
            raw = pd.read_csv(io.BytesIO(data), dtype={"symbol": str}, keep_default_na=True)
        else:
            import pyarrow.parquet as pq

            rows = pq.ParquetFile(io.BytesIO(data)).metadata.num_rows
            if rows > MAX_ROWS:
                _too_many(source, "rows", rows, MAX_ROWS)
            raw = pd.read_parquet(io.BytesIO(data))
    except BarDataError:
        raise
    except Exception as e:  # pandas/pyarrow parse errors: say which file, on one line
        raise BarDataError(f"{source}: cannot read ({' '.join(str(e).split())[:300]})") from None
    if len(raw) > MAX_ROWS:
        _too_many(source, "rows", len(raw), MAX_ROWS)
    if "symbol" in raw.columns and (n := raw["symbol"].astype(str).str.strip().nunique()) > MAX_SYMBOLS:
        _too_many(source, "symbols", n, MAX_SYMBOLS)
    try:
        return _validated(raw, source)
    except _BadRow as e:
        if kind == "parquet":
            where = f"row {e.index + 1}"
        else:
            lines = _csv_record_lines(data)  # only on the error path: a second scan of the bytes
            # a file the scan reads differently from pandas gets the record number, never a wrong line
            ok = lines is not None and len(lines) == len(raw)
            where = f"line {lines[e.index]}" if ok and lines else f"record {e.index + 1}"
        raise BarDataError(f"{source} {where}, column {e.column}: {e.what}") from None


def _too_many(source: str, what: str, n: int, limit: int) -> None:
    raise BarDataError(f"{source}: {n:,} {what}; a bar file may hold at most {limit:,} {what} (split it by symbol "
                       f"or by date, or keep fewer)")


def _csv_rows(data: bytes) -> int:
    """The CSV's data records as pandas counts them: non-blank records after the header."""
    reader = csv.reader(io.StringIO(data.decode("utf-8-sig", errors="replace"), newline=""))
    try:
        n = sum(1 for rec in reader if any(f.strip(" \t") for f in rec))
    except csv.Error:
        return 0  # pandas says what is wrong with it
    return max(n - 1, 0)


def _csv_record_lines(data: bytes) -> list[int] | None:
    """The 1-based file line on which each data record starts, as pandas reads the file.

    pandas skips blank and whitespace-only lines, so a frame row's position is not its line;
    a quoted field may span lines. The header (the first non-blank record) is left out.
    None when the bytes cannot be scanned.
    """
    text = data.decode("utf-8-sig", errors="replace")  # pandas drops a BOM too
    lines = _NEWLINE.split(text)
    starts: list[int] = []
    reader = csv.reader(io.StringIO(text, newline=""))
    done = 0
    try:
        for _ in reader:
            start, done = done + 1, reader.line_num
            # a whitespace-only first line holds no quote, so the record is that line alone: blank
            if start <= len(lines) and not lines[start - 1].strip(" \t"):
                continue
            starts.append(start)
    except csv.Error:
        return None
    return starts[1:]


def validate_bars(raw: pd.DataFrame, source: str, *, first_row: int = 1, unit: str = "row") -> pd.DataFrame:
    """A clean bars frame from ``raw`` or a BarDataError; row ``i`` (0-based) is named ``{unit} {i + first_row}``."""
    try:
        return _validated(raw, source)
    except _BadRow as e:
        raise BarDataError(f"{source} {unit} {e.index + first_row}, column {e.column}: {e.what}") from None


def _validated(raw: pd.DataFrame, source: str) -> pd.DataFrame:
    missing = [c for c in BAR_COLUMNS if c not in raw.columns]
    if missing:
        raise BarDataError(f"{source}: missing column(s) {', '.join(missing)}")
    df = raw[BAR_COLUMNS].copy()
    n = len(df)
    if n == 0:
        raise BarDataError(f"{source}: no rows")

    def first(bad: pd.Series | np.ndarray) -> int | None:
        arr = np.asarray(bad, dtype=bool)
        return int(np.argmax(arr)) if arr.any() else None

    # empty / NaN values
    for col in BAR_COLUMNS:
        if (i := first(df[col].isna())) is not None:
            raise _BadRow(i, col, "empty or NaN")
    df["symbol"] = df["symbol"].astype(str).str.strip()
    if (i := first(df["symbol"] == "")) is not None:
        raise _BadRow(i, "symbol", "blank")
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
        # pandas 3 reads "3000-01-01" at a coarser unit; the bars are kept in nanoseconds (1677..2262)
        parsed = parsed.mask((parsed < _NS_MIN) | (parsed > _NS_MAX))
    if (i := first(parsed.isna())) is not None:
        raise _BadRow(i, "timestamp", f"unparseable {df['timestamp'].iloc[i]!r}")
    df["timestamp"] = parsed.dt.as_unit("ns")
    # numbers
    for col in PRICE_COLUMNS + ["volume"]:
        if pd.api.types.is_bool_dtype(df[col]):  # TRUE/FALSE would otherwise read as 1.0/0.0
            raise _BadRow(0, col, f"not a number: {df[col].iloc[0]!r}")
        num = pd.to_numeric(df[col], errors="coerce")
        if (i := first(num.isna())) is not None:
            raise _BadRow(i, col, f"not a number: {df[col].iloc[i]!r}")
        df[col] = num.astype(float)
        # "inf", "1e400": an infinite price poisons every sum after it
        if (i := first(~np.isfinite(df[col].to_numpy()))) is not None:
            raise _BadRow(i, col, f"not finite: {raw[col].iloc[i]!r}")
    for col in PRICE_COLUMNS:
        if (i := first(df[col] <= 0)) is not None:
            raise _BadRow(i, col, f"non-positive {df[col].iloc[i]}")
        if (i := first(df[col] < MIN_PRICE)) is not None:
            raise _BadRow(i, col, f"{df[col].iloc[i]} is below the smallest price {MIN_PRICE}")
    if (i := first(df["volume"] < 0)) is not None:
        raise _BadRow(i, "volume", f"negative {df['volume'].iloc[i]}")
    if (i := first(df["high"] < df["low"])) is not None:
        raise _BadRow(i, "high", f"{df['high'].iloc[i]} < low {df['low'].iloc[i]}")
    for col in ("open", "close"):
        if (i := first((df[col] > df["high"]) | (df[col] < df["low"]))) is not None:
            raise _BadRow(i, col, f"{df[col].iloc[i]} outside [low, high]")
    # order and duplicates within a symbol, in file order
    tsv = ts_ns(df["timestamp"])
    for sym, idx in df.groupby("symbol", sort=False).indices.items():
        d = np.diff(tsv[idx])
        if (k := first(d == 0)) is not None:
            i = int(idx[k + 1])
            raise _BadRow(i, "timestamp", f"duplicate {df['timestamp'].iloc[i].isoformat()} for {sym}")
        if (k := first(d < 0)) is not None:
            i = int(idx[k + 1])
            raise _BadRow(i, "timestamp", f"out-of-order {df['timestamp'].iloc[i].isoformat()} for {sym} "
                                          f"(after {df['timestamp'].iloc[int(idx[k])].isoformat()})")
    return df.sort_values(["timestamp", "symbol"], kind="stable").reset_index(drop=True)


def _session_days(frame: pd.DataFrame) -> list[date]:
    return sorted(set(frame["timestamp"].dt.tz_convert(NY).dt.date))


def bars_summary(frame: pd.DataFrame) -> dict[str, Any]:
    """What a loaded bars frame holds, for a page to show: symbols (sorted), first and last session
    (New York dates), the number of sessions and of rows. An empty frame has no first or last session."""
    days = _session_days(frame) if len(frame) else []
    return {"symbols": sorted(str(s) for s in frame["symbol"].unique()) if len(frame) else [],
            "first": days[0] if days else None, "last": days[-1] if days else None,
            "sessions": len(days), "rows": len(frame)}


class ReplayMarket(FrameMarket):
    """Bars from a file (or any validated frame) as a MarketData port."""

    @property
    def sessions(self) -> list[date]:
        return _session_days(self.frame)

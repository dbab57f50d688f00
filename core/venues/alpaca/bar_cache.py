"""The local bar cache: one Parquet file per symbol and New York day, for Alpaca history and for live bars.

Layout (both kinds): ``<root>/<symbol>/<YYYY-MM-DD>.parquet`` with the bar columns (``BAR_COLUMNS``).

* History (``AlpacaMarketData.history``): root ``<ALPACA_CACHE_DIR>/<feed>``, completed days as the history endpoint
  served them, bar columns only.
* Live (``LiveBarKeeper``, issue 28): root ``<ALPACA_CACHE_DIR>/live/<feed>``, the bars the live engine received,
  each with ``source`` (``alpaca-live:<feed>``) and ``received_at`` (UTC, from the engine's clock). A bar is kept as
  live first received it: a later copy of the same minute (a restarted engine loading its warm-up again) does not
  replace it. Kept apart from the history files, so a session replay can tell a bar the vendor revised later (the
  history's copy) from the one live traded on.

The reader takes files with or without the provenance columns. Every write goes to a temporary file in the same
folder and is renamed over the old one (``os.replace``): a kill -9 mid-write leaves the previous file whole.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from datetime import date, datetime
from pathlib import Path

import pandas as pd

from core.clock import NY, sessions_between
from core.venues.marketdata import BAR_COLUMNS, empty_bars

log = logging.getLogger(__name__)

PROVENANCE = ["source", "received_at"]
LIVE_COLUMNS = [*BAR_COLUMNS, *PROVENANCE]
FLUSH_EVERY_S = 300.0  # market seconds of received bars held in memory before they are written


def day_file(root: str | Path, symbol: str, day: date) -> Path:
    return Path(root) / symbol / f"{day.isoformat()}.parquet"


def live_root(cache_dir: str | Path, feed: str) -> Path:
    """Where the live engine keeps the bars it received (beside the history of the same feed)."""
    return Path(cache_dir) / "live" / feed


def read_day_file(path: Path, *, provenance: bool = False) -> pd.DataFrame | None:
    """One cached day (possibly empty), or None when there is no file or it cannot be used. A file without the
    provenance columns (history, or written before they existed) reads as such; with ``provenance`` its rows get
    ``source`` and ``received_at`` empty."""
    if not path.exists():
        return None
    try:
        frame = pd.read_parquet(path)
    except Exception as e:  # a damaged file is fetched again, not a replay that cannot start
        log.warning("bar cache: cannot read %s (%s)", path, e)
        return None
    if not set(BAR_COLUMNS) <= set(frame.columns):
        log.warning("bar cache: %s has columns %s", path, list(frame.columns))
        return None
    if not provenance:
        return frame[BAR_COLUMNS]
    if "source" not in frame.columns:
        frame["source"] = pd.Series([None] * len(frame), dtype=object)
    if "received_at" not in frame.columns:
        frame["received_at"] = pd.Series(pd.NaT, index=frame.index, dtype="datetime64[ns, UTC]")
    return frame[LIVE_COLUMNS]


def write_day_file(path: Path, frame: pd.DataFrame) -> None:
    """Write ``frame`` as ``path`` atomically: aside, then renamed over the old file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    out = frame.reset_index(drop=True)
    out["symbol"] = out["symbol"].astype(str)  # an empty day keeps the dtypes of a full one
    # two writers (two pages fetching, a flush and a stop) never share a temporary name
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        out.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _ny_day(ts: pd.Series) -> pd.Series:
    return ts.dt.tz_convert(NY).dt.date


class LiveBarKeeper:
    """Keeps every bar the live engine received (module docstring). ``add`` runs inside the tick and only appends
    to a list; ``flush`` (the runtime's session-events job, outside the engine lock, and its stop) merges them into
    the day files. ``clock`` is the engine's clock: ``received_at`` is when the tick that fetched them ran."""

    def __init__(self, root: str | Path, source: str, clock: Callable[[], datetime], *,
                 flush_every_s: float = FLUSH_EVERY_S) -> None:
        self.root = Path(root)
        self.source = source
        self.clock = clock
        self.flush_every_s = flush_every_s
        self._buf: list[pd.DataFrame] = []
        self._lock = threading.Lock()  # the buffer: a tick appends while a flush takes it
        self._writing = threading.Lock()  # one flush at a time (the job and stop)
        self._last_flush: datetime | None = None
        self.written = 0  # rows written by this process (status, tests)

    def add(self, bars: pd.DataFrame) -> None:
        if bars.empty:
            return
        stamped = bars[BAR_COLUMNS].assign(source=self.source, received_at=pd.Timestamp(self.clock()))
        stamped["received_at"] = stamped["received_at"].astype("datetime64[ns, UTC]")
        with self._lock:
            self._buf.append(stamped)
            if self._last_flush is None:
                self._last_flush = self.clock()  # the interval counts from the first bars held

    @property
    def pending(self) -> int:
        with self._lock:
            return sum(len(f) for f in self._buf)

    def due(self) -> bool:
        with self._lock:
            if not self._buf or self._last_flush is None:
                return False
            last = self._last_flush
        return (self.clock() - last).total_seconds() >= self.flush_every_s

    def flush(self) -> int:
        """Write what is held; returns the rows added to the files. On a failure the rows stay for the next try."""
        with self._writing:
            with self._lock:
                taken, self._buf = self._buf, []
                self._last_flush = self.clock()
            if not taken:
                return 0
            frame = pd.concat(taken, ignore_index=True)
            added = 0
            try:
                for (sym, day), rows in frame.groupby([frame["symbol"], _ny_day(frame["timestamp"])], sort=True):
                    added += self._merge(str(sym), day, rows)
            except Exception:
                log.exception("live bars: could not write %d rows to %s; kept for the next flush", len(frame),
                              self.root)
                with self._lock:
                    self._buf.insert(0, frame)
                raise
            self.written += added
            return added

    def _merge(self, symbol: str, day: date, rows: pd.DataFrame) -> int:
        path = day_file(self.root, symbol, day)
        old = read_day_file(path, provenance=True)
        parts = [rows] if old is None or old.empty else [old, rows]
        merged = pd.concat(parts, ignore_index=True)
        # the first copy of a minute is the one live traded on: the file's, else the earliest received here
        merged = merged.drop_duplicates("timestamp", keep="first").sort_values("timestamp", kind="stable")
        write_day_file(path, merged[LIVE_COLUMNS])
        return len(merged) - (0 if old is None else len(old))


def read_live_bars(root: str | Path, symbols: Sequence[str], first: date, last: date) -> pd.DataFrame:
    """The kept live bars of ``symbols`` over the sessions [first, last] (``LIVE_COLUMNS``; empty if none)."""
    frames = []
    for day in sessions_between(first, last):
        for sym in dict.fromkeys(symbols):
            f = read_day_file(day_file(root, sym, day), provenance=True)
            if f is not None and not f.empty:
                frames.append(f)
    if not frames:
        out = empty_bars()
        return out.assign(source=pd.Series(dtype=object), received_at=pd.Series(dtype="datetime64[ns, UTC]"))
    out = pd.concat(frames, ignore_index=True)
    return out.sort_values(["timestamp", "symbol"], kind="stable").reset_index(drop=True)

"""A benchmark line for a research run: buy and hold an equal-weight basket (and QQQ) over the same bars.

The basket (``buy_and_hold``):

* only bars inside the regular sessions listed (open <= bar open < close) count;
* each symbol gets ``start_cash / N`` (N = the symbols with at least one bar in that range) and spends it at the
  open of its first bar there, in fractional shares; on ordinary data that is the first bar of the first
  session for every symbol, and a symbol that starts trading later holds its share as cash until then;
* a symbol with no bar at all in the range is left out of N and reported (``curve.attrs["left_out"]``);
* every minute the holdings are marked at that minute's close, the last close carried forward when a symbol
  has no bar that minute, and held to the end.

The curve has one sample per minute bar, timed at the bar's close (``ts`` = bar open + 1 minute, tz-aware
UTC): a bar's close is known when its minute ends, which is when the engine's equity samples of the same
minute are taken, so the two lines overlay minute for minute.

``benchmark_metrics`` uses the strategy's own definitions (``core.metrics.performance``) so the numbers compare.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

import numpy as np
import pandas as pd

from core.clock import session_bounds
from core.metrics import performance

BAR_S = 60  # the feed's bars are 1-minute bars; a bar's close is known at open + BAR_S
BENCHMARK_METRICS = ("total_return", "cagr", "sharpe", "sortino", "max_drawdown", "max_drawdown_duration_s")
INDEX_SYMBOL = "QQQ"


def session_rows(ts: np.ndarray, sessions: list[date]) -> np.ndarray:
    """Indices of the bars (``ts``: sorted bar open times, epoch seconds) inside the listed regular sessions."""
    parts = []
    for day in sessions:
        bounds = session_bounds(day)
        if bounds is None:
            raise ValueError(f"{day} is not a trading session: a benchmark is held over regular sessions only")
        lo = int(np.searchsorted(ts, int(bounds[0].timestamp()), side="left"))
        hi = int(np.searchsorted(ts, int(bounds[1].timestamp()), side="left"))
        parts.append(np.arange(lo, hi))
    return np.unique(np.concatenate(parts)) if parts else np.empty(0, dtype=np.int64)


def buy_and_hold(feed: Any, symbols: Sequence[str], sessions: list[date], start_cash: float) -> pd.DataFrame:
    """Equity (columns ts, equity) of ``start_cash`` split equally over ``symbols`` and held (see the module
    docstring). ``curve.attrs``: ``held`` (the symbols bought, in the order given) and ``left_out`` (those with
    no bar in the range, or unknown to the feed). Nothing held: an empty curve."""
    ts = np.asarray(feed.ts, dtype=np.int64)
    rows = session_rows(ts, sessions)
    held: list[str] = []
    left_out: list[str] = []
    entries: list[tuple[int, int]] = []  # (feed column, first row in ``rows`` with a price)
    for sym in dict.fromkeys(symbols):  # a symbol listed twice is one symbol
        j = feed.col.get(sym)
        if j is None:
            left_out.append(sym)
            continue
        priced = np.isfinite(feed.open[rows, j]) & np.isfinite(feed.close[rows, j])
        if not priced.any():
            left_out.append(sym)
            continue
        held.append(sym)
        entries.append((j, int(np.argmax(priced))))
    if not held:
        curve = pd.DataFrame({"ts": pd.to_datetime(np.empty(0, dtype=np.int64), unit="s", utc=True),
                              "equity": np.empty(0)})
    else:
        share = start_cash / len(held)
        k = np.arange(len(rows))
        equity = np.zeros(len(rows))
        for j, first in entries:
            qty = share / float(feed.open[rows[first], j])
            close = pd.Series(feed.close[rows, j]).ffill().to_numpy()  # a minute without a bar: the last close
            equity += np.where(k >= first, qty * close, share)  # before its first bar the share is still cash
        curve = pd.DataFrame({"ts": pd.to_datetime(ts[rows] + BAR_S, unit="s", utc=True), "equity": equity})
    curve["ts"] = curve["ts"].dt.as_unit("ns")
    curve.attrs["held"] = held
    curve.attrs["left_out"] = left_out
    return curve


def _finite(v: float) -> float | None:
    return v if math.isfinite(v) else None  # JSON has no Infinity (a Sortino with no down day)


def benchmark_metrics(curve: pd.DataFrame, start_cash: float, sessions: int) -> dict[str, Any]:
    """total_return, cagr, sharpe, sortino, max_drawdown (and its duration) of a curve, by the definitions of
    ``core.metrics.performance`` (``equity_metrics``, called on the curve as ``research_metrics`` calls it on the
    engine's equity), so the annualised three are None below ``figures.MIN_ANNUALISED_SESSIONS`` sessions
    (``core.metrics.figures``) as the strategy's are. Non-finite values are None; an empty curve has None for every
    metric."""
    if curve.empty:
        return dict.fromkeys(BENCHMARK_METRICS)
    ts: list[datetime] = [t.to_pydatetime() for t in pd.to_datetime(curve["ts"], utc=True)]
    equity = [float(v) for v in curve["equity"]]
    out = performance.equity_metrics(ts, equity, start_cash, sessions)  # against the starting cash, as the run's
    return {k: None if out[k] is None else _finite(float(out[k])) for k in BENCHMARK_METRICS}


def _entry(label: str, curve: pd.DataFrame, start_cash: float, sessions: int) -> dict[str, Any]:
    return {"label": label, "symbols": list(curve.attrs["held"]), "left_out": list(curve.attrs["left_out"]),
            "metrics": benchmark_metrics(curve, start_cash, sessions), "curve": curve}


def benchmarks(feed: Any, universe_symbols: Sequence[str], sessions: list[date],
               start_cash: float) -> dict[str, dict[str, Any]]:
    """The benchmark lines of a run: ``equal_weight`` over ``universe_symbols`` (the run's traded tiers, A and
    B, not the inverse ETFs: the caller chooses) always, and ``QQQ`` when the feed has QQQ bars in the range.
    Each: label, symbols (held), left_out, metrics, curve."""
    ew = buy_and_hold(feed, universe_symbols, sessions, start_cash)
    n = len(ew.attrs["held"])
    out = {"equal_weight": _entry(f"Buy & hold, equal weight ({n} symbol{'' if n == 1 else 's'})", ew,
                                  start_cash, len(sessions))}
    qqq = buy_and_hold(feed, [INDEX_SYMBOL], sessions, start_cash)
    if qqq.attrs["held"]:
        out[INDEX_SYMBOL] = _entry(f"Buy & hold {INDEX_SYMBOL}", qqq, start_cash, len(sessions))
    return out

"""Figures of plain series, no database: drawdown, Sharpe, Sortino, daily returns, exposure, trade metrics,
flip-flops and signal excursions, and the rule that says when an annualised figure has enough sessions.

The definitions are written out in ``core.metrics.performance`` (a run's research metrics) and
``core.metrics.kpi`` (the rules §11 KPIs), which both compute from these.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from core.clock import trading_dates

PERIODS_PER_YEAR = 252
# annualised figures (CAGR, Sharpe, Sortino) need at least this many sessions of daily returns: about a month,
# below which one good or bad day decides the figure and annualising it says nothing about a year
MIN_ANNUALISED_SESSIONS = 20
ANNUALISED = ("cagr", "sharpe", "sortino")
FLIP_FLOP_WINDOW_S = 600  # two actionable signals of opposite sign this close together are a flip-flop


def enough_sessions(sessions: int) -> bool:
    """Whether ``sessions`` sessions of daily returns are enough for an annualised figure."""
    return sessions >= MIN_ANNUALISED_SESSIONS


def max_drawdown(equity: list[float]) -> float:
    """Largest peak-to-trough fall of the equity curve, as a fraction of the peak (0.0 when flat)."""
    peak, worst = -math.inf, 0.0
    for v in equity:  # ``max`` spelled as comparisons (the protections run this after every fill): same result
        if v > peak:
            peak = v
        if peak > 0:
            d = (peak - v) / peak
            if d > worst:
                worst = d
    return worst


def drawdown(ts: list[datetime], equity: list[float]) -> tuple[float, float]:
    """(max drawdown fraction, its duration in seconds from the peak to recovery or the last sample)."""
    worst, worst_peak_i, worst_i = 0.0, 0, 0
    peak_i = 0
    for i, v in enumerate(equity):
        if v > equity[peak_i]:
            peak_i = i
        elif equity[peak_i] > 0:
            dd = (equity[peak_i] - v) / equity[peak_i]
            if dd > worst:
                worst, worst_peak_i, worst_i = dd, peak_i, i
    if worst == 0.0:
        return 0.0, 0.0
    peak = equity[worst_peak_i]
    end = next((j for j in range(worst_i, len(equity)) if equity[j] >= peak), len(equity) - 1)
    return worst, (ts[end] - ts[worst_peak_i]).total_seconds()


def trade_metrics(pnls: list[float]) -> dict[str, float | None]:
    """Trades, win rate, profit factor, payoff ratio and expectancy of closed trades' P&L. With no trade the win
    rate and the profit factor are None (no figure), not 0 (which would read as "every trade lost")."""
    wins = [p for p in pnls if p > 0]
    losses = [p for p in pnls if p < 0]
    n = len(pnls)
    gross_loss = -sum(losses)
    return {
        "trades": n,
        "win_rate": len(wins) / n if n else None,
        "profit_factor": None if not n else (sum(wins) / gross_loss) if gross_loss > 0 else (
            math.inf if wins else 0.0),
        "payoff_ratio": ((sum(wins) / len(wins)) / (gross_loss / len(losses))) if wins and losses else 0.0,
        "expectancy": sum(pnls) / n if n else 0.0,
    }


def sharpe(returns: list[float], periods_per_year: float = PERIODS_PER_YEAR) -> float:
    """Annualised Sharpe of periodic returns (risk-free 0); 0.0 with fewer than 2 returns or no variance."""
    n = len(returns)
    if n < 2:
        return 0.0
    mean = sum(returns) / n
    var = sum((r - mean) ** 2 for r in returns) / (n - 1)
    return 0.0 if var <= 0 else mean / math.sqrt(var) * math.sqrt(periods_per_year)


def sortino(returns: list[float], periods: int = PERIODS_PER_YEAR) -> float:
    n = len(returns)
    if n < 2:
        return 0.0
    mean = sum(returns) / n
    down = math.sqrt(sum(min(r, 0.0) ** 2 for r in returns) / n)
    if down == 0:
        return math.inf if mean > 0 else 0.0
    return mean / down * math.sqrt(periods)


def daily_returns(ts: list[datetime], equity: list[float], start_equity: float) -> list[float]:
    last_by_day: dict[Any, float] = {}
    for day, v in zip(trading_dates(ts), equity, strict=True):
        last_by_day[day] = v
    out, prev = [], start_equity
    for day in sorted(last_by_day):
        v = last_by_day[day]
        out.append(v / prev - 1.0 if prev else 0.0)
        prev = v
    return out


def exposure(values: list[float], equity: list[float]) -> float:
    pairs = [(v, e) for v, e in zip(values, equity, strict=True) if e > 0]
    return sum(v / e for v, e in pairs) / len(pairs) if pairs else 0.0


def flip_flops(signals: Iterable[tuple[str, float, float]], window_s: int = FLIP_FLOP_WINDOW_S) -> int:
    """Sign reversals between consecutive actionable signals of one symbol at most ``window_s`` apart.
    ``signals``: (symbol, epoch seconds, score) in time order."""
    last: dict[str, tuple[float, float]] = {}
    n = 0
    for sym, t, score in signals:
        prev = last.get(sym)
        if prev is not None and t - prev[0] <= window_s and (prev[1] > 0) != (score > 0):
            n += 1
        last[sym] = (t, score)
    return n


def signal_excursion(price: float, path: Iterable[float], sign: int) -> tuple[float, float]:
    """(MAE, MFE) of a signal at ``price`` along the later prices ``path``, in the signal's direction: a
    negative score profits when the price falls. MAE <= 0 <= MFE, as fractions of ``price``."""
    moves = [sign * (p / price - 1.0) for p in path]
    return min([0.0, *moves]), max([0.0, *moves])

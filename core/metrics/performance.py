"""Research metrics of a run (rules §11, issue 5), computed from what the engine stored (the figures of plain
series they use are ``core.metrics.figures``; how a missing one is shown, ``core.metrics.display``).

Definitions (all documented here so a number on screen can be checked by hand):
* total return = last equity / first equity - 1; CAGR = (1 + total return) ** (252 / sessions) - 1.
* daily returns: the last equity of each New York trading date against the previous date's last
  (the first date against the starting equity). Sharpe = mean / sample std x sqrt(252);
  Sortino = mean / downside deviation x sqrt(252), downside deviation = sqrt(mean(min(r, 0)^2)).
* max drawdown: the largest peak-to-trough fall of the equity samples, as a fraction of the peak;
  its duration: seconds from that peak until equity first gets back to it (or the last sample).
* trades: win rate, profit factor (gross win / gross loss), expectancy (mean P&L), MAE/MFE medians,
  stop-out rate (exits by the stop-loss leg / trades).
* exposure: time-weighted mean of (market value held / equity) over the equity samples.
* flip-flop: an actionable signal whose sign is the opposite of the same symbol's previous
  actionable signal at most 10 minutes earlier (``figures.flip_flops``); the rate is flip-flops / actionable.
* P&L: ``pnl_total`` = last equity - starting equity (what the account gained, open positions marked at
  the last price); ``pnl_realized`` = the sum of closed trades' P&L. A trade's own ``pnl`` is its P&L.

Too small a sample gives no figure (None, shown "n/a" or "–"), never a number that looks meaningful:
* CAGR, Sharpe and Sortino are annualised from daily returns: with fewer than ``MIN_ANNUALISED_SESSIONS``
  (20) sessions, a week's luck would be raised to the power of a year (a 1 % week is a 65 % CAGR), so they
  are None. The sample is the smaller of the sessions the run covered and the New York dates with equity.
* win rate and profit factor with no closed trade are None (0 % would say "every trade lost").
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from core.metrics import kpi
from core.metrics.figures import (
    PERIODS_PER_YEAR,
    daily_returns,
    drawdown,
    enough_sessions,
    exposure,
    flip_flops,
    sharpe,
    sortino,
)
from core.state.decisions import decision_counts, decision_total
from core.state.store import Store


def equity_metrics(ts: list[datetime], equity: list[float], start_equity: float, sessions: int) -> dict[str, Any]:
    """total_return, cagr, sharpe, sortino, max_drawdown and its duration of an equity series (``ts`` tz-aware,
    in time order) that started from ``start_equity`` over ``sessions`` sessions. The annualised three are None
    below ``MIN_ANNUALISED_SESSIONS`` (counted as the smaller of ``sessions`` and the dates with equity)."""
    last = equity[-1] if equity else start_equity
    total = last / start_equity - 1.0 if start_equity else 0.0
    rets = daily_returns(ts, equity, start_equity)
    dd, dd_s = drawdown(ts, equity) if equity else (0.0, 0.0)
    annualise = enough_sessions(min(sessions, len(rets)))
    years = sessions / PERIODS_PER_YEAR
    return {
        "total_return": total,
        "cagr": ((1.0 + total) ** (1.0 / years) - 1.0 if total > -1 else -1.0) if annualise else None,
        "sharpe": sharpe(rets) if annualise else None,
        "sortino": sortino(rets) if annualise else None,
        "max_drawdown": dd,
        "max_drawdown_duration_s": dd_s,
    }


def research_metrics(store: Store, start_equity: float, sessions: int) -> dict[str, Any]:
    eq = store.query("SELECT ts, equity, exposure FROM equity ORDER BY ts")
    ts = [datetime.fromisoformat(r["ts"]) for r in eq]
    equity = [r["equity"] for r in eq]
    last = equity[-1] if equity else start_equity
    stats = kpi.trade_kpis(store.query("SELECT pnl, mae, mfe, exit_reason FROM trades ORDER BY id"))
    # actionable decisions keep their full row in both forms of the log (core.state.decisions)
    act = store.query("SELECT symbol, ts, score FROM signals WHERE decision='actionable' AND score IS NOT NULL "
                      "ORDER BY ts, id")
    flips = flip_flops([(r["symbol"], datetime.fromisoformat(r["ts"]).timestamp(), r["score"]) for r in act])
    suppressed = decision_counts(store, "reason", "decision='suppressed'")  # both forms of the decision log
    return {
        **equity_metrics(ts, equity, start_equity, sessions),
        "pnl_total": round(last - start_equity, 2),
        **stats,
        "exposure": exposure([r["exposure"] for r in eq], equity),
        "flip_flops": flips,
        "flip_flop_rate": flips / len(act) if act else 0.0,
        "signals": decision_total(store, "decision != 'skipped'"),
        "actionable": len(act),
        "suppressed": suppressed,
        **kpi.llm_usage(store),
    }

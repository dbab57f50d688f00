"""Trade and equity metrics (SPEC 11) computed from SQLite rows."""

from __future__ import annotations

import math
from statistics import median
from typing import Any

from core.store import Store


def max_drawdown(equity: list[float]) -> float:
    """Largest peak-to-trough fall of the equity curve, as a fraction of the peak (0.0 when flat)."""
    peak, worst = -math.inf, 0.0
    for v in equity:
        peak = max(peak, v)
        if peak > 0:
            worst = max(worst, (peak - v) / peak)
    return worst


def trade_metrics(pnls: list[float]) -> dict[str, float]:
    wins = [p for p in pnls if p > 0]
    losses = [p for p in pnls if p < 0]
    n = len(pnls)
    gross_loss = -sum(losses)
    return {
        "trades": n,
        "win_rate": len(wins) / n if n else 0.0,
        "profit_factor": (sum(wins) / gross_loss) if gross_loss > 0 else (math.inf if wins else 0.0),
        "payoff_ratio": ((sum(wins) / len(wins)) / (gross_loss / len(losses))) if wins and losses else 0.0,
        "expectancy": sum(pnls) / n if n else 0.0,
    }


def sharpe(returns: list[float], periods_per_year: float) -> float:
    """Annualised Sharpe of periodic returns (risk-free 0); 0.0 with fewer than 2 returns or no variance."""
    n = len(returns)
    if n < 2:
        return 0.0
    mean = sum(returns) / n
    var = sum((r - mean) ** 2 for r in returns) / (n - 1)
    return 0.0 if var <= 0 else mean / math.sqrt(var) * math.sqrt(periods_per_year)


def summary(store: Store) -> dict[str, Any]:
    trades = store.query("SELECT pnl, mae, mfe, exit_reason FROM trades ORDER BY id")
    equity = [r["equity"] for r in store.query("SELECT equity FROM equity ORDER BY ts")]
    pnls = [t["pnl"] for t in trades]
    out: dict[str, Any] = trade_metrics(pnls)
    out["max_drawdown"] = max_drawdown(equity)
    out["mae_median"] = median([t["mae"] for t in trades]) if trades else 0.0
    out["mfe_median"] = median([t["mfe"] for t in trades]) if trades else 0.0
    out["stop_out_rate"] = (sum(1 for t in trades if t["exit_reason"] == "stop_loss") / len(trades)) if trades else 0.0
    daily = store.query("SELECT substr(ts,1,10) AS d, MAX(ts) AS last FROM equity GROUP BY d ORDER BY d")
    closes = [store.scalar("SELECT equity FROM equity WHERE ts=?", (r["last"],)) for r in daily]
    rets = [b / a - 1 for a, b in zip(closes, closes[1:], strict=False) if a]
    out["sharpe"] = sharpe(rets, 252)
    return out

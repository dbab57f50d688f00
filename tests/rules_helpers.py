"""Helpers for the rule-boundary tests (rules §4, 7, 8).

Every boundary test drives ``Engine.tick`` and reads back what the engine wrote: the decision log
(``signals``), the ``intents`` and ``basket_state``. Holdings are put at the (simulated) broker, where the
engine adopts them on its first tick as it would a real account's. Only ``hold`` knows how the simulated
broker stores a position.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date, datetime
from typing import Any

import pandas as pd

from core.engine import Engine
from tests.helpers import DAY, ScriptedStrategy, flat_bars, make_engine

NAN = float("nan")  # a member with no usable score does not report

Score = float | Callable[[pd.Timestamp], float]


def scored(table: Mapping[str, Score], default: float = 0.0) -> Callable[[str, pd.Timestamp], float]:
    """score(symbol, bar open): a constant or a function of the bar's open time per symbol; ``default`` elsewhere."""
    def f(sym: str, ts: pd.Timestamp) -> float:
        v = table.get(sym, default)
        return float(v(ts)) if callable(v) else float(v)
    return f


def before(t: datetime, early: float, late: float) -> Callable[[pd.Timestamp], float]:
    """``early`` for bars opening before ``t``, ``late`` from ``t`` on (ticks see the bar of ``t`` from t + 60 s)."""
    edge = pd.Timestamp(t)
    return lambda ts: early if ts < edge else late


def engine(table: Mapping[str, Score], *, prices: dict[str, float] | None = None,
           spikes: Mapping[str, float] | None = None, days: list[date] | None = None,
           bars: pd.DataFrame | None = None, **overrides: Any) -> Engine:
    spike_of = scored(spikes or {})
    strategy = ScriptedStrategy(scored(table), spike=lambda s, t: spike_of(s, t))
    return make_engine(bars if bars is not None else flat_bars(days or [DAY], prices=prices), strategy, **overrides)


def hold(e: Engine, symbol: str, qty: float, avg_price: float) -> None:
    """The broker account holds ``symbol`` (bought outside the app); call before the first tick."""
    e.store.execute("INSERT INTO sim_positions(symbol, qty, avg_price) VALUES (?,?,?)", (symbol, qty, avg_price))
    e.store.commit()
    e.broker.reload()  # the simulated broker keeps its book in memory: it reads the edited table again


def signal_rows(e: Engine, symbol: str) -> list[dict[str, Any]]:
    return e.store.query("SELECT * FROM signals WHERE symbol=? ORDER BY id", (symbol,))


def decision_at(e: Engine, symbol: str, now: datetime) -> dict[str, Any]:
    """The decision row of ``symbol`` at the tick ``now`` (exactly one is expected)."""
    rows = [r for r in signal_rows(e, symbol) if datetime.fromisoformat(r["ts"]) == now]
    assert len(rows) == 1, f"{symbol} at {now}: {rows}"
    return rows[0]


def outcome(row: dict[str, Any]) -> str:
    """'actionable' or the suppression reason."""
    return "actionable" if row["decision"] == "actionable" else str(row["reason"])


def intents(e: Engine, **where: Any) -> list[dict[str, Any]]:
    sql = "SELECT * FROM intents"
    if where:
        sql += " WHERE " + " AND ".join(f"{k}=?" for k in where)
    return e.store.query(sql + " ORDER BY created_at, id", tuple(where.values()))


def basket_row(e: Engine, name: str) -> dict[str, Any] | None:
    return e.store.one("SELECT * FROM basket_state WHERE name=?", (name,))


def reject_all_pending(e: Engine, now: datetime) -> None:
    """The trader clicks Reject on every waiting intent (applied at the next tick)."""
    for r in intents(e, status="pending"):
        e.store.send_command("reject", {"intent_id": r["id"]}, who="trader", now=now)

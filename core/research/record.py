"""A finished replay as the record a trader keeps: metrics, equity, trades, the benchmark and where the bars
came from. The Research page and ``python -m core.research --save NAME`` both store runs through here, so a run
saved from the command line shows on the page as it is."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import pandas as pd

from core import views
from core.config import Settings
from core.research import benchmark, runs
from core.research.replay import ReplayResult
from core.research.sources import DataSource, traded_symbols

MAX_CURVE_POINTS = 20_000  # a stored curve is for the chart: a year of minutes is thinned, its metrics are not


def thin(curve: pd.DataFrame, max_points: int = MAX_CURVE_POINTS) -> pd.DataFrame:
    """Every k-th sample and the last one, so a year's minute curve stays small enough to store and draw."""
    if len(curve) <= max_points:
        return curve.reset_index(drop=True)
    step = -(-len(curve) // max_points)
    keep = list(range(0, len(curve), step))
    if keep[-1] != len(curve) - 1:
        keep.append(len(curve) - 1)
    return curve.iloc[keep].reset_index(drop=True)


def run_benchmarks(res: ReplayResult, settings: Settings, sessions: list[date]) -> dict[str, dict[str, Any]]:
    """Buy-and-hold of the run's traded symbols (and QQQ when the data has it) over the replayed sessions."""
    return benchmark.benchmarks(res.engine.feed, traded_symbols(settings.universe), sessions, settings.sim_start_cash)


def replay_record(res: ReplayResult, settings: Settings, source: DataSource, params: dict[str, Any],
                  sessions: list[date]) -> dict[str, Any]:
    """Everything ``runs.save_run`` stores for a replay, built from the result while its database is open."""
    bench = run_benchmarks(res, settings, sessions)
    src = {**source.run_source(sessions), "symbols": list(settings.universe.all_symbols),
           "fingerprint": runs.feed_fingerprint(res.engine.feed, sessions[0], sessions[-1])}
    return {
        "source": src,
        "params": params,
        "metrics": res.stats["metrics"],  # pnl_total (the account's change) and pnl_realized (closed trades)
        "equity": thin(views.equity_curve(res.store)),
        "trades": views.trades(res.store, local_times=False),
        "benchmark": {k: {"label": v["label"], "metrics": v["metrics"], "curve": thin(v["curve"])}
                      for k, v in bench.items()},
    }


def save_replay(store: Any, name: str, record: dict[str, Any], *, created_at: datetime) -> int:
    return runs.save_run(store, name=name, kind="replay", created_at=created_at, **record)

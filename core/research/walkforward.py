"""Out-of-sample check of a sweep: choose on some sessions, judge on later ones.

``split_sessions`` cuts a range into folds. One fold: the first ``in_sample`` share of the sessions (70% by
default, rounded to the nearest session) is in-sample, the rest out-of-sample. ``folds=k`` (rolling
walk-forward): the range is cut into k consecutive windows of (nearly) equal length that do not overlap, and
each window is split the same way, so fold i chooses on the start of window i and is judged on its end, before
window i+1 begins.

``walk_forward`` runs, per fold, the sweep over the in-sample sessions only, picks the best cell by ``metric``
(the largest value; for ``max_drawdown`` and the other figures in ``LOWER_IS_BETTER`` the smallest; a cell without
a value never wins; ties go to the first cell in grid order), replays that cell on the out-of-sample sessions and
compares. The two parts have different lengths (70/30), so they are compared as rates: the return per session
(the geometric mean, ``per_session_return``) and the annualised Sharpe (only where both parts reach
``MIN_ANNUALISED_SESSIONS``; below it Sharpe has no value and is not judged), never total against total.

No leak: nothing after the in-sample's last session reaches the in-sample sweep or the choice. The sweep's market
is cut at the end of that session's New York day (a file's frame is sliced; another market is wrapped so that
no bar after the cut can be asked for), on top of the feed loading only the sessions it replays. The
out-of-sample replay sees the bars just before its first session as indicator warm-up only (the feed's look-back
of a few days), never a bar after its own last session.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.clock import NY, UTC
from core.metrics.figures import ANNUALISED, MIN_ANNUALISED_SESSIONS, enough_sessions
from core.research.workers import WorkerPool
from core.venues.marketdata import MarketData, empty_bars
from core.venues.sim.bar_files import ReplayMarket

LOWER_IS_BETTER = frozenset({"max_drawdown", "max_drawdown_duration_s", "stop_out_rate", "flip_flop_rate"})
# a warning when out-of-sample falls below half of in-sample. Both are rates, never totals: a 70/30 split gives the
# in-sample part more sessions, so its total return is larger for any steadily profitable cell (4 sessions of
# +19.6 % are +105 %, one of +19.3 % is +19 %: "below half" although nothing faded). Sharpe is annualised and has
# no value under MIN_ANNUALISED_SESSIONS, where only the return per session is compared.
PER_SESSION = "return_per_session"
DECAY_CHECKS = (PER_SESSION, "sharpe")


@dataclass(frozen=True)
class Fold:
    in_sample: list[date]
    out_of_sample: list[date]


def split_sessions(sessions: Sequence[date], *, folds: int = 1, in_sample: float = 0.7) -> list[Fold]:
    """The folds of a range (see the module docstring). ValueError when a part would have no session."""
    if not 0.0 < in_sample < 1.0:
        raise ValueError(f"the in-sample share must be between 0 and 1 (exclusive), not {in_sample}")
    if folds < 1:
        raise ValueError(f"folds must be >= 1, not {folds}")
    days = list(sessions)
    if sorted(set(days)) != days:
        raise ValueError("the sessions must be in order, each once")
    n = len(days)
    edges = [round(i * n / folds) for i in range(folds + 1)]
    out: list[Fold] = []
    for k in range(folds):
        window = days[edges[k]:edges[k + 1]]
        cut = math.floor(len(window) * in_sample + 0.5)  # the nearest whole session (halves go in-sample)
        if cut < 1 or cut >= len(window):
            which = f"fold {k + 1} of {folds}: " if folds > 1 else ""
            raise ValueError(f"{which}{len(window)} session(s) cannot be split {in_sample:.0%} in-sample / "
                             f"{1 - in_sample:.0%} out-of-sample: a part would have no session")
        out.append(Fold(in_sample=window[:cut], out_of_sample=window[cut:]))
    return out


# ---------------------------------------------------------------- markets cut at a date
def day_end(day: date) -> datetime:
    """Midnight (New York) after ``day``, in UTC: where the feed stops loading a range ending on ``day``."""
    return datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=NY).astimezone(UTC)


class BarsUntil:
    """A market whose bars stop at ``until`` (exclusive): asked for later bars, it has none."""

    live = False

    def __init__(self, market: MarketData, until: datetime) -> None:
        self.market, self.until = market, until

    def bars(self, symbols: Sequence[str], start: datetime, end: datetime) -> pd.DataFrame:
        end = min(end, self.until)
        return self.market.bars(symbols, start, end) if end > start else empty_bars()


class WideBarsUntil(BarsUntil):
    """``BarsUntil`` of a market that serves wide arrays (the synthetic market), keeping that fast path."""

    def bars_wide(self, symbols: Sequence[str], start: datetime, end: datetime) -> tuple[np.ndarray, dict[str, Any]]:
        return self.market.bars_wide(symbols, start, max(start, min(end, self.until)))  # type: ignore[attr-defined]


def cut_market(market: MarketData, last: date) -> MarketData:
    """``market`` without any bar after ``last``'s New York day."""
    until = day_end(last)
    if isinstance(market, ReplayMarket):  # a frame: slice it, the rest is not even in memory of the copy
        frame = market.frame
        return ReplayMarket(frame[frame["timestamp"] < pd.Timestamp(until)])
    if isinstance(market, BarsUntil) and market.until <= until:
        return market
    return WideBarsUntil(market, until) if hasattr(market, "bars_wide") else BarsUntil(market, until)


# ---------------------------------------------------------------- choosing the best cell
def metric_names() -> list[str]:
    """The figures of a sweep row a walk-forward can choose by (the research metrics and ``orders``)."""
    from core.metrics.performance import research_metrics
    from core.state.store import Store

    store = Store(":memory:")  # an empty run: every key, no value that matters
    try:
        keys = [k for k in research_metrics(store, 1.0, 0) if k != "suppressed"]
    finally:
        store.close()
    return list(dict.fromkeys([*keys, "orders"]))


def _value(row: dict[str, Any], metric: str) -> float | None:
    v = row.get(metric)
    if isinstance(v, bool) or not isinstance(v, int | float) or math.isnan(v):
        return None
    return float(v)


def best_cell(rows: Sequence[dict[str, Any]], metric: str) -> dict[str, Any] | None:
    """The row with the best ``metric`` (see the module docstring), or None when no row has a value."""
    lower = metric in LOWER_IS_BETTER
    best, best_v = None, None
    for row in rows:
        v = _value(row, metric)
        if v is None:
            continue
        if best_v is None or (v < best_v if lower else v > best_v):
            best, best_v = row, v
    return best


def per_session_return(total_return: float | None, sessions: int) -> float | None:
    """The compound return of one session that gives ``total_return`` over ``sessions`` sessions (geometric mean):
    what makes parts of different lengths comparable. None without a total or a session."""
    if total_return is None or sessions < 1 or math.isnan(total_return):
        return None
    return -1.0 if total_return <= -1.0 else (1.0 + total_return) ** (1.0 / sessions) - 1.0


def with_per_session(metrics: dict[str, Any], sessions: int) -> dict[str, Any]:
    """``metrics`` with ``return_per_session`` added (from its ``total_return`` over ``sessions``) unless it has it."""
    if _value(metrics, PER_SESSION) is not None:
        return dict(metrics)
    return {**metrics, PER_SESSION: per_session_return(_value(metrics, "total_return"), sessions)}


def _shown(fig: str, v: float) -> str:
    return f"{v:+.2%}" if fig == PER_SESSION else f"{v:.4g}"


def decay_warnings(in_sample: dict[str, Any], out_of_sample: dict[str, Any] | None,
                   sessions: tuple[int, int] | None = None) -> list[str]:
    """Warnings for each of ``DECAY_CHECKS`` positive in-sample that falls below half of it out-of-sample.

    ``sessions``: (in-sample, out-of-sample) session counts; with them the return per session is computed from
    each part's ``total_return`` when the metrics do not carry it, and the warning names both totals."""
    ins, oos = dict(in_sample), dict(out_of_sample or {})
    if sessions is not None:
        ins, oos = with_per_session(ins, sessions[0]), with_per_session(oos, sessions[1]) if oos else oos
    out = []
    for fig in DECAY_CHECKS:
        a = _value(ins, fig)
        if a is None or a <= 0:
            continue
        b = _value(oos, fig)
        if b is None and fig in ANNUALISED and sessions is not None and not enough_sessions(sessions[1]):
            continue  # too short a part to annualise: not judged (its table cell says n/a), the return per session is
        label = "return per session" if fig == PER_SESSION else f"{fig} (annualised)"
        if b is None:
            out.append(f"out-of-sample {label} has no value (in-sample {_shown(fig, a)})")
        elif b < a / 2:
            text = f"out-of-sample {label} {_shown(fig, b)} is below half of in-sample {_shown(fig, a)}"
            if fig == PER_SESSION and sessions is not None:
                text += (f" (total return {_value(oos, 'total_return') or 0.0:+.2%} over {sessions[1]} "
                         f"session{'s' if sessions[1] != 1 else ''} against {_value(ins, 'total_return') or 0.0:+.2%} "
                         f"over {sessions[0]})")
            out.append(text)
    return out


# ---------------------------------------------------------------- the walk
def walk_forward(base: dict[str, Any], grid: dict[str, list[Any]], *, sessions: Sequence[date], seed: int,
                 market: MarketData | None = None, bars_file: str | Path | None = None, folds: int = 1,
                 in_sample: float = 0.7, metric: str = "total_return", workers: int = 2,
                 progress: Callable[[int, int], bool | None] | None = None,
                 today: date | None = None, cluster: str | None = None) -> dict[str, Any]:
    """Per fold: sweep ``grid`` in-sample, replay the best cell out-of-sample (see the module docstring).

    ``market``: prepared bars covering ``sessions`` (else ``bars_file``, else ``build_market``: Alpaca history
    needs ``today``). ``cluster``: a Dask scheduler the sweeps run on (``run_sweep``). ``progress(done, total)``
    counts steps (each fold: its cells, then its out-of-sample replay); returning False stops, and the result
    then has ``"cancelled": True`` and the folds finished so far."""
    from core.config import load_settings
    from core.research.replay import build_market, cell_row, grid_cells, run_replay, run_sweep, split_refused

    if not grid:
        raise ValueError("a walk-forward needs a sweep grid")
    if metric not in metric_names():
        raise ValueError(f"unknown metric {metric!r}: one of {', '.join(metric_names())}")
    parts = split_sessions(sessions, folds=folds, in_sample=in_sample)
    shortest = min(len(p.in_sample) for p in parts)
    if metric in ANNUALISED and shortest < MIN_ANNUALISED_SESSIONS:  # refused now, not after the whole sweep
        raise ValueError(f"{metric} is annualised and needs at least {MIN_ANNUALISED_SESSIONS} in-sample sessions; "
                         f"the shortest in-sample part here has {shortest}: choose the best cell by total_return "
                         f"(or another figure), or a longer range")
    settings = load_settings(**base)
    if market is None:
        market = build_market(settings, seed=seed, start=parts[0].in_sample[0], end=parts[-1].out_of_sample[-1],
                              bars_file=bars_file, today=today)
    n_cells = len(split_refused(base, grid_cells(grid))[0])  # the cells that run (a refused one is only listed)
    total = len(parts) * (n_cells + 1)
    result: dict[str, Any] = {"metric": metric, "params": list(grid), "in_sample_share": in_sample, "folds": []}
    # the same worker processes for every fold's sweep (warm: imports and the compiled kernel loaded once)
    pool = WorkerPool(workers) if not cluster and workers > 1 and len(parts) > 1 else None
    try:
        for k, fold in enumerate(parts):
            offset = k * (n_cells + 1)

            def step(done: int, _total: int, offset: int = offset) -> bool | None:
                return progress(offset + done, total) if progress is not None else None

            ins, oos = fold.in_sample, fold.out_of_sample
            rows = run_sweep(base, grid, seed=seed, start=ins[0], end=ins[-1], market=cut_market(market, ins[-1]),
                             workers=workers, progress=step if progress is not None else None, cluster=cluster,
                             pool=pool)
            if rows.cancelled:
                result["cancelled"] = True
                return result
            best = best_cell(rows, metric)
            part: dict[str, Any] = {
                "in_sample": {"first": ins[0].isoformat(), "last": ins[-1].isoformat(), "sessions": len(ins),
                              "grid": list(rows), "best": None, "metrics": None},
                "out_of_sample": {"first": oos[0].isoformat(), "last": oos[-1].isoformat(), "sessions": len(oos),
                                  "metrics": None},
                "warnings": [],
            }
            if best is None:
                why = ""
                if metric in ANNUALISED and not enough_sessions(len(ins)):  # the n/a rule of core.metrics.figures
                    why = (f" ({metric} is annualised: it needs ≥ {MIN_ANNUALISED_SESSIONS} sessions, the in-sample "
                           f"part has {len(ins)}; choose by total_return or take a longer range)")
                part["warnings"].append(f"no cell has a {metric} value in-sample{why}: nothing to test out-of-sample")
                result["folds"].append(part)
                continue
            cell = {name: best[name] for name in grid}
            is_metrics = with_per_session({key: v for key, v in best.items() if key not in grid}, len(ins))
            part["in_sample"].update(best=cell, metrics=is_metrics)

            def oos_step(_ticks: int, _total: int, step: Callable[[int, int], bool | None] = step) -> bool | None:
                return step(n_cells, total)

            res = run_replay(load_settings(**{**base, **cell}), seed=seed, start=oos[0], end=oos[-1],
                             market=cut_market(market, oos[-1]), db_path=":memory:",
                             progress=oos_step if progress is not None else None)
            res.store.close()
            if res.stats.get("cancelled"):
                result["cancelled"] = True
                return result
            oos_metrics = with_per_session({key: v for key, v in cell_row(cell, res.stats).items() if key not in grid},
                                           len(oos))
            part["out_of_sample"]["metrics"] = oos_metrics
            part["warnings"] = decay_warnings(is_metrics, oos_metrics, (len(ins), len(oos)))
            result["folds"].append(part)
            if progress is not None and step(n_cells + 1, total) is False:
                result["cancelled"] = True
                return result
        return result
    finally:
        if pool is not None:
            pool.close()

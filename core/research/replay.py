"""Replay history through the one Engine with a simulated clock (SPEC 1).

``run_replay`` drives ``Engine.tick`` every 30 s of each regular session, from
the open to the close, over synthetic bars (by seed) or bars from a file. It
resumes from where a previous run on the same database stopped: ticks at or
before the stored cursor are skipped, so a restart duplicates nothing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from core.clock import UTC, SimClock, session_bounds, trading_sessions
from core.config import Settings
from core.engine import Engine
from core.feed import MarketFeed
from core.research import kpi, metrics
from core.state.decisions import SUMMARY, decision_counts, decision_total
from core.state.store import Store
from core.venues.marketdata import MarketData
from core.venues.sim.bar_files import ReplayMarket, load_bars
from core.venues.sim.synthetic import SyntheticMarket

TICK_S = 30
PROGRESS_EVERY = 100  # ticks between progress callbacks
FLUSH_EVERY = 500  # ticks per journal transaction: a killed replay resumes from the last flushed cursor


@dataclass
class ReplayResult:
    stats: dict[str, Any]
    store: Store
    engine: Engine


def build_market(settings: Settings, *, seed: int, start: date, bars_file: str | Path | None,
                 days: int = 1) -> MarketData:
    if bars_file:
        return ReplayMarket(load_bars(bars_file))
    if settings.market_data == "alpaca":
        return ReplayMarket(alpaca_history(settings, start, days))
    return SyntheticMarket(seed=seed, universe=settings.universe, anchor=start)


def alpaca_history(settings: Settings, start: date, days: int, warmup_sessions: int = 3) -> Any:
    """Alpaca bars for the replay range plus warm-up sessions, from the local Parquet cache when present."""
    from core.clock import previous_session
    from core.venues.alpaca.broker import AlpacaCaller, RequestBudget
    from core.venues.alpaca.marketdata import AlpacaMarketData, make_data_client

    key = settings.alpaca_api_key.get_secret_value() if settings.alpaca_api_key else ""
    secret = settings.alpaca_secret_key.get_secret_value() if settings.alpaca_secret_key else ""
    client = make_data_client(key, secret, url_override=settings.alpaca_data_url, timeout_s=settings.alpaca_timeout_s)
    md = AlpacaMarketData(client, caller=AlpacaCaller(RequestBudget(settings.alpaca_requests_per_min),
                                                      max_retries=settings.alpaca_max_retries),
                          feed=settings.alpaca_feed, cache_dir=settings.alpaca_cache_dir)
    first = start
    for _ in range(warmup_sessions):
        first = previous_session(first)
    last = trading_sessions(start, days)[-1]
    frame = md.history(settings.universe.all_symbols, first, last)
    if frame.empty:
        raise ValueError(f"Alpaca returned no bars for {first}..{last}")
    return frame


def session_ticks(day: date, tick_s: int = TICK_S) -> list[datetime]:
    """Tick times of one session: open+tick_s ... close (the close tick settles the last bar)."""
    bounds = session_bounds(day)
    if bounds is None:
        return []
    open_, close = (b.astimezone(UTC) for b in bounds)
    n = int((close - open_).total_seconds() // tick_s)
    return [open_ + timedelta(seconds=tick_s * (i + 1)) for i in range(n)]


def replay_days(settings: Settings, start: date, days: int, market: MarketData) -> list[date]:
    if isinstance(market, ReplayMarket):
        sessions = [d for d in market.sessions if d >= start][:days] if days else list(market.sessions)
        if not sessions:
            raise ValueError(f"the bars file has no session on or after {start}")
        return sessions
    return trading_sessions(start, days)


def run_replay(
    settings: Settings,
    *,
    days: int,
    seed: int,
    start: date,
    bars_file: str | Path | None = None,
    db_path: str = ":memory:",
    stop_after_ticks: int | None = None,
    progress: Callable[[int, int], bool | None] | None = None,
    feed: MarketFeed | None = None,
    decisions: str = SUMMARY,
) -> ReplayResult:
    """Replay ``days`` sessions. ``progress(done, total)`` is called every ``PROGRESS_EVERY`` ticks; returning
    False cancels the run (the result then has ``stats["cancelled"] = True``). ``decisions``: the form of the
    decision log (``core.state.decisions``): ``summary`` counts what never passed the cutoff, ``full`` keeps every
    row as live trading does; the stats are the same either way."""
    t0 = time.perf_counter()
    store = Store(db_path)
    # a replay database is rebuilt from the bars at will: skip the fsyncs (a killed process still loses
    # nothing committed; only a power cut could, and the run then resumes from its cursor or restarts)
    store.execute("PRAGMA synchronous=OFF")
    market = feed.market if feed is not None else build_market(settings, seed=seed, start=start,
                                                                bars_file=bars_file, days=days)
    engine = Engine(settings, store, market, feed=feed, decisions=decisions)
    store.batched = True  # the journal is written in batches of FLUSH_EVERY ticks (core.state.store.Store.flush)
    sessions = replay_days(settings, start, days, market)
    engine.feed.preload_sessions(sessions)  # nothing to do when a scored feed was passed in
    cursor = store.get_meta("replay_cursor")
    done_until = datetime.fromisoformat(cursor) if cursor else None
    ticks = 0
    clock: SimClock | None = None
    total = sum(len(session_ticks(d)) for d in sessions) if progress else 0
    for day in sessions:
        for now in session_ticks(day):
            if progress is not None and ticks % PROGRESS_EVERY == 0 and progress(ticks, total) is False:
                store.flush()
                stats = collect_stats(store, engine, sessions, time.perf_counter() - t0)
                stats["cancelled"] = True
                return ReplayResult(stats, store, engine)
            if done_until is not None and now <= done_until:
                continue
            if clock is None:
                clock = SimClock(now)
            clock.set(now)
            engine.tick(clock.now())
            store.set_meta("replay_cursor", now.isoformat())  # in the same transaction as the tick
            ticks += 1
            if ticks % FLUSH_EVERY == 0:
                store.flush()
            if stop_after_ticks is not None and ticks >= stop_after_ticks:
                store.flush()
                return ReplayResult(collect_stats(store, engine, sessions, time.perf_counter() - t0), store, engine)
    store.flush()
    return ReplayResult(collect_stats(store, engine, sessions, time.perf_counter() - t0), store, engine)


def count_bars(engine: Engine, sessions: list[date]) -> int:
    if not sessions:
        return 0
    first = session_bounds(sessions[0])
    last = session_bounds(sessions[-1])
    if first is None or last is None:
        return 0
    lo = int(first[0].timestamp())
    hi = int(last[1].timestamp())
    mask = (engine.feed.ts >= lo) & (engine.feed.ts < hi)
    return int((~_isnan(engine.feed.close[mask])).sum())


def _isnan(a: Any) -> Any:
    import numpy as np

    return np.isnan(a)


def collect_stats(store: Store, engine: Engine, sessions: list[date], elapsed: float) -> dict[str, Any]:
    # the decision figures read both forms of the log (core.state.decisions): the same from a full or a summary run
    suppressed = decision_counts(store, "reason", "decision='suppressed'")
    statuses = {r["status"]: r["n"] for r in store.query(
        "SELECT status, COUNT(*) AS n FROM intents GROUP BY status")}
    m = kpi.summary(store)
    start_equity = engine.s.sim_start_cash
    end_equity = store.scalar("SELECT equity FROM equity ORDER BY ts DESC LIMIT 1") or start_equity
    return {
        "bars": count_bars(engine, sessions),
        "signals": decision_total(store, "decision != 'skipped'"),
        "suppressed": suppressed,
        "actionable": decision_total(store, "decision='actionable'"),
        "intents": sum(statuses.values()),
        "intents_pending": statuses.get("pending", 0),
        "intents_expired": statuses.get("expired", 0),
        "orders": store.scalar("SELECT COUNT(*) FROM orders") or 0,
        "fills": store.scalar("SELECT COUNT(*) FROM fills") or 0,
        "trades": m["trades"],
        "pnl": round(end_equity - start_equity, 2),
        "max_drawdown": round(m["max_drawdown"], 6),
        "win_rate": round(m["win_rate"], 6),
        "sessions": len(sessions),
        "metrics": _finite(metrics.research_metrics(store, start_equity, len(sessions))),
        "elapsed_s": round(elapsed, 3),
    }


def _finite(d: dict[str, Any]) -> dict[str, Any]:
    """JSON has no Infinity: an unbounded ratio (no losing trade) is reported as null, floats rounded."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, float):
            out[k] = None if math.isinf(v) or math.isnan(v) else round(v, 6)
        else:
            out[k] = v
    return out


# ================================================================ parameter sweeps
SWEEP_ALIASES = {"cooldown": "mixer_cooldown_s", "cooldown_s": "mixer_cooldown_s", "delta": "cutoff_delta"}


def parse_sweep(items: list[str]) -> dict[str, list[Any]]:
    """``["cutoff_delta=-0.05:0.05:0.01", "cooldown=60,120,180"]`` -> {setting: [values]} (ranges inclusive)."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--sweep {item!r}: expected NAME=a:b:step or NAME=v1,v2")
        name, spec = (s.strip() for s in item.split("=", 1))
        name = SWEEP_ALIASES.get(name.lower(), name.lower())
        if ":" in spec:
            try:
                lo, hi, step = (float(x) for x in spec.split(":"))
            except ValueError:
                raise ValueError(f"--sweep {item!r}: a range is start:stop:step") from None
            if step <= 0 or hi < lo:
                raise ValueError(f"--sweep {item!r}: need step > 0 and stop >= start")
            n = int(math.floor((hi - lo) / step + 1e-9)) + 1
            values: list[Any] = [round(lo + i * step, 10) for i in range(n)]
        else:
            values = [v.strip() for v in spec.split(",") if v.strip()]
        if not values:
            raise ValueError(f"--sweep {item!r}: no values")
        grid[name] = values
    if len(grid) > 2:
        raise ValueError("a sweep takes one or two parameters")
    return grid


def grid_cells(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    cells: list[dict[str, Any]] = [{}]
    for name, values in grid.items():
        cells = [{**c, name: v} for c in cells for v in values]
    return cells


def shared_feed(settings: Settings, *, days: int, seed: int, start: date,
                bars_file: str | Path | None = None) -> MarketFeed:
    """The bars of a replay, scored once: every sweep cell replays on this feed."""
    from core.strategy import load_strategy

    market = build_market(settings, seed=seed, start=start, bars_file=bars_file, days=days)
    feed = MarketFeed(market, load_strategy(settings.strategy), settings.universe.all_symbols)
    feed.preload_sessions(replay_days(settings, start, days, market))
    return feed


_WORKER_FEED: MarketFeed | None = None


def _init_worker(feed: MarketFeed) -> None:
    global _WORKER_FEED
    _WORKER_FEED = feed


def _sweep_cell(args: tuple[dict[str, Any], dict[str, Any], int, int, str, str | None],
                feed: MarketFeed | None = None) -> dict[str, Any]:
    base, cell, days, seed, start_s, bars_file = args
    import tempfile

    from core.config import load_settings

    settings = load_settings(**{**base, **cell})
    with tempfile.TemporaryDirectory() as tmp:
        res = run_replay(settings, days=days, seed=seed, start=date.fromisoformat(start_s), bars_file=bars_file,
                         db_path=str(Path(tmp) / "sweep.db"), feed=feed or _WORKER_FEED, decisions=SUMMARY)
        stats = res.stats
        res.store.close()
    return {**cell, **{k: v for k, v in stats["metrics"].items() if k != "suppressed"}, "pnl": stats["pnl"],
            "orders": stats["orders"]}


def run_sweep(base: dict[str, Any], grid: dict[str, list[Any]], *, days: int, seed: int, start: date,
              bars_file: str | None = None, workers: int = 2,
              progress: Callable[[int, int], bool | None] | None = None) -> list[dict[str, Any]]:
    """Every grid cell replayed in its own process (spawned: safe from threaded callers such as Streamlit).
    The bars are scored once, here, and handed to each worker process when it starts."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from core.config import load_settings

    cells = grid_cells(grid)
    jobs = [(base, c, days, seed, start.isoformat(), bars_file) for c in cells]
    # the strategy is not a sweep dimension, so one scored feed serves every cell
    feed = shared_feed(load_settings(**base), days=days, seed=seed, start=start, bars_file=bars_file)
    results: dict[int, dict[str, Any]] = {}
    if workers <= 1:
        for i, j in enumerate(jobs):
            results[i] = _sweep_cell(j, feed)
            if progress is not None and progress(i + 1, len(jobs)) is False:
                break
    else:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(feed,)) as pool:
            futures = {pool.submit(_sweep_cell, j): i for i, j in enumerate(jobs)}
            for done, fut in enumerate(as_completed(futures), start=1):
                results[futures[fut]] = fut.result()
                if progress is not None and progress(done, len(jobs)) is False:
                    for f in futures:
                        f.cancel()
                    break
    return [results[i] for i in sorted(results)]

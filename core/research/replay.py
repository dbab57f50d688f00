"""Replay history through the one Engine with a simulated clock (rules §1).

``run_replay`` drives ``Engine.tick`` every 30 s of each regular session, from
the open to the close, over synthetic bars (by seed) or bars from a file. It
resumes from where a previous run on the same database stopped: ticks at or
before the stored cursor are skipped, so a restart duplicates nothing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from core.clock import UTC, SimClock, session_bounds, sessions_between, trading_sessions
from core.config import SETTING_ALIASES, Settings, unknown_setting_message
from core.engine import Engine
from core.feed import MarketFeed
from core.metrics import kpi, performance
from core.research.feed_cache import preload
from core.state.decisions import SUMMARY, decision_total
from core.state.store import Store
from core.venues.marketdata import MarketData
from core.venues.sim.bar_files import ReplayMarket, load_bars
from core.venues.sim.synthetic import SyntheticMarket

TICK_S = 30
PROGRESS_EVERY = 100  # ticks between progress callbacks
FLUSH_EVERY = 500  # ticks per journal transaction: a killed replay resumes from the last flushed cursor
PATHS = ("kernel", "reference")


@dataclass
class ReplayResult:
    stats: dict[str, Any]
    store: Store
    engine: Engine
    # ticks the kernel handed to the engine, by cause (core.research.kernel.WHY_NAMES): how it ran, not a result
    handbacks: dict[int, int] = field(default_factory=dict)


def build_market(settings: Settings, *, seed: int, start: date, bars_file: str | Path | None,
                 days: int = 1, end: date | None = None, today: date | None = None,
                 progress: Callable[..., Any] | None = None) -> MarketData:
    """The bars of a run: a file, Alpaca history (needs ``today``: only completed days are cached) or the
    synthetic market of ``seed`` (a day's bars depend only on the seed, the date and the universe, so a range
    replays the very bars the live engine traded on those days). A prepared market (``market=``) skips this."""
    if bars_file:
        return ReplayMarket(load_bars(bars_file))
    if settings.market_data == "alpaca":
        if today is None:
            raise ValueError("a replay on Alpaca history needs today's date (today=): only completed days are cached")
        last = end if end is not None else trading_sessions(start, days)[-1]
        return ReplayMarket(alpaca_history(settings, start, last, today=today, progress=progress))
    return SyntheticMarket(seed=seed, universe=settings.universe, anchor=start)


def research_market_data(settings: Settings, feed: str | None = None) -> Any:
    """Alpaca's bar history for research: the same client, timeout and retries as live, but a download waits its
    turn in the request budget instead of failing, and completed days go to the Parquet cache."""
    from core.venues.alpaca.broker import AlpacaCaller, RequestBudget
    from core.venues.alpaca.marketdata import AlpacaMarketData, make_data_client

    key = settings.alpaca_api_key.get_secret_value() if settings.alpaca_api_key else ""
    secret = settings.alpaca_secret_key.get_secret_value() if settings.alpaca_secret_key else ""
    client = make_data_client(key, secret, url_override=settings.alpaca_data_url, timeout_s=settings.alpaca_timeout_s)
    return AlpacaMarketData(client, caller=AlpacaCaller(RequestBudget(settings.alpaca_requests_per_min),
                                                        max_retries=settings.alpaca_max_retries, queue=True),
                            feed=feed or settings.alpaca_feed, cache_dir=settings.alpaca_cache_dir)


def alpaca_history(settings: Settings, first: date, last: date, *, today: date,
                   progress: Callable[[int, int], Any] | None = None, warmup_sessions: int = 3) -> Any:
    """Alpaca bars of [first, last] plus ``warmup_sessions`` sessions before ``first`` (indicator warm-up), from
    the local Parquet cache when present. ``today``: days before it are complete and may be cached."""
    from core.clock import previous_session

    md = research_market_data(settings)
    lo = first
    for _ in range(warmup_sessions):
        lo = previous_session(lo)
    frame = md.history(settings.universe.all_symbols, lo, last, today=today, progress=progress)
    if frame.empty:
        raise ValueError(f"Alpaca returned no bars for {lo}..{last}")
    return frame


def session_ticks(day: date, tick_s: int = TICK_S) -> list[datetime]:
    """Tick times of one session: open+tick_s ... close (the close tick settles the last bar)."""
    bounds = session_bounds(day)
    if bounds is None:
        return []
    open_, close = (b.astimezone(UTC) for b in bounds)
    n = int((close - open_).total_seconds() // tick_s)
    return [open_ + timedelta(seconds=tick_s * (i + 1)) for i in range(n)]


def replay_days(settings: Settings, start: date, days: int, market: MarketData | None,
                end: date | None = None) -> list[date]:
    """The sessions a run replays: with ``end``, every session in [start, end]; else ``days`` sessions from
    ``start``. A file's (or a download's) market replays the sessions it has bars on (``days`` 0: all of them)."""
    if isinstance(market, ReplayMarket):
        have = market.sessions
        if end is not None:
            sessions = [d for d in have if start <= d <= end]
        else:
            sessions = [d for d in have if d >= start][:days] if days else list(have)
        if not sessions:
            span = f"{have[0]}..{have[-1]}" if have else "nothing"
            where = f"in {start}..{end}" if end is not None else f"on or after {start}"
            raise ValueError(f"the bars have no session {where} (they cover {span})")
        return sessions
    if end is not None:
        sessions = sessions_between(start, end)
        if not sessions:
            raise ValueError(f"no trading session in {start}..{end}")
        return sessions
    if days < 1:
        raise ValueError("give a number of sessions (days >= 1) or an end date")
    return trading_sessions(start, days)


def run_replay(
    settings: Settings,
    *,
    days: int = 0,
    seed: int,
    start: date,
    end: date | None = None,
    bars_file: str | Path | None = None,
    market: MarketData | None = None,
    today: date | None = None,
    db_path: str = ":memory:",
    stop_after_ticks: int | None = None,
    progress: Callable[[int, int], bool | None] | None = None,
    feed: MarketFeed | None = None,
    decisions: str = SUMMARY,
    path: str = "kernel",
) -> ReplayResult:
    """Replay the sessions of [start, end] (or ``days`` sessions from ``start`` when ``end`` is None).

    The bars: ``feed`` (already scored: its market), else ``market`` (prepared, e.g. ``ReplayMarket`` of an uploaded
    file or downloaded history: its sessions inside the range), else ``build_market`` (``bars_file``, Alpaca history
    with ``today``, or the synthetic market of ``seed``). ``stats["first_session"]``/``["last_session"]`` name the
    range actually replayed. ``progress(done, total)`` is called every ``PROGRESS_EVERY`` ticks; returning False
    cancels the run (the result then has ``stats["cancelled"] = True``). ``decisions``: the form of the decision log
    (``core.state.decisions``): ``summary`` counts what never passed the cutoff, ``full`` keeps every row as live
    trading does; the stats are the same either way. ``path``: ``kernel`` runs the quiet ticks compiled and the
    rest through ``Engine.tick`` (``core.research.fast``); ``reference`` runs every tick through ``Engine.tick``.
    Both write the same tables (``tests/test_kernel_parity.py``)."""
    if path not in PATHS:
        raise ValueError(f"path must be one of {', '.join(PATHS)}, not {path!r}")
    t0 = time.perf_counter()
    if feed is not None:
        market = feed.market
    elif market is None:
        market = build_market(settings, seed=seed, start=start, bars_file=bars_file, days=days, end=end, today=today)
    sessions = replay_days(settings, start, days, market, end)  # a bad range fails before the database opens
    store = Store(db_path)
    # a replay database is rebuilt from the bars at will: skip the fsyncs (a killed process still loses
    # nothing committed; only a power cut could, and the run then resumes from its cursor or restarts)
    store.execute("PRAGMA synchronous=OFF")
    engine = Engine(settings, store, market, feed=feed, decisions=decisions)
    store.batched = True  # the journal is written in batches of FLUSH_EVERY ticks (core.state.store.Store.flush)
    preload(engine.feed, sessions, settings)  # FEED_CACHE_DIR; nothing to do when a scored feed was passed in
    cursor = store.get_meta("replay_cursor")
    done_until = datetime.fromisoformat(cursor) if cursor else None
    ticks = 0
    clock: SimClock | None = None
    total = sum(len(session_ticks(d)) for d in sessions) if progress else 0
    if path == "kernel":
        from core.research.fast import replay_ticks

        todo = [now for day in sessions for now in session_ticks(day) if done_until is None or now > done_until]
        _, cancelled, handbacks = replay_ticks(engine, todo, progress=progress, total=total,
                                               stop_after_ticks=stop_after_ticks, flush_every=FLUSH_EVERY)
        stats = collect_stats(store, engine, sessions, time.perf_counter() - t0)
        if cancelled:
            stats["cancelled"] = True
        return ReplayResult(stats, store, engine, handbacks)
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
    # the decision figures read both forms of the log (core.state.decisions): the same from a full or a summary run;
    # the metrics count the suppressed decisions and the signals with the very queries the stats show
    metrics = performance.research_metrics(store, engine.s.sim_start_cash, len(sessions))
    statuses = {r["status"]: r["n"] for r in store.query(
        "SELECT status, COUNT(*) AS n FROM intents GROUP BY status")}
    m = kpi.summary(store)
    start_equity = engine.s.sim_start_cash
    end_equity = store.scalar("SELECT equity FROM equity ORDER BY ts DESC LIMIT 1") or start_equity
    # two P&Ls, named apart: pnl_total is the account's change (open positions marked), pnl_realized (in metrics)
    # the closed trades' sum
    return {
        "bars": count_bars(engine, sessions),
        "signals": metrics["signals"],
        "suppressed": dict(metrics["suppressed"]),
        "actionable": decision_total(store, "decision='actionable'"),
        "intents": sum(statuses.values()),
        "intents_pending": statuses.get("pending", 0),
        "intents_expired": statuses.get("expired", 0),
        "orders": store.scalar("SELECT COUNT(*) FROM orders") or 0,
        "fills": store.scalar("SELECT COUNT(*) FROM fills") or 0,
        "trades": m["trades"],
        "pnl_total": round(end_equity - start_equity, 2),
        "max_drawdown": round(m["max_drawdown"], 6),
        "win_rate": None if m["win_rate"] is None else round(m["win_rate"], 6),
        "sessions": len(sessions),
        "first_session": sessions[0].isoformat() if sessions else None,
        "last_session": sessions[-1].isoformat() if sessions else None,
        "metrics": _finite(metrics),
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
SWEEP_ALIASES = SETTING_ALIASES  # the CLI's --set takes the same short names (core.config)


MAX_CELLS = 10_000  # a typo in a step (0.0001 for 0.01) would otherwise queue a million replays
NOT_SWEPT = {"seed": "the market's seed is the sweep's data, not a parameter: run one sweep per seed"}


def parse_sweep(items: list[str]) -> dict[str, list[Any]]:
    """``["cutoff_delta=-0.05:0.05:0.01", "cooldown=60,120,180", ...]`` -> {setting: [values]} (ranges inclusive).

    Any number of parameters, each a numeric setting; every value is checked against that setting's own bounds
    and typed as the setting is (``cooldown=60`` is the int 60). Rules between settings (RISK_PER_TRADE above
    MAX_CONCURRENT_RISK) are not checked here: a cell that breaks one is refused by ``run_sweep``, not the grid."""
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
            if not all(math.isfinite(x) for x in (lo, hi, step)) or step <= 0 or hi < lo:
                raise ValueError(f"--sweep {item!r}: need step > 0 and stop >= start")
            n = int(math.floor((hi - lo) / step + 1e-9)) + 1
            if n > MAX_CELLS:
                raise ValueError(f"--sweep {item!r}: {n:,} values (at most {MAX_CELLS:,} cells in a sweep)")
            values: list[Any] = [round(lo + i * step, 10) + 0.0 for i in range(n)]  # + 0.0: -0.0 is 0.0
        else:
            values = [v.strip() for v in spec.split(",") if v.strip()]
        if not values:
            raise ValueError(f"--sweep {item!r}: no values")
        if name in grid:
            raise ValueError(f"--sweep {item!r}: {name} is already swept")
        grid[name] = [sweep_value(name, v) for v in values]
        repeated = sorted({str(v) for v in grid[name] if grid[name].count(v) > 1})
        if repeated:
            raise ValueError(f"--sweep {item!r}: {', '.join(repeated)} given twice (a cell would run twice)")
    cells = math.prod(len(v) for v in grid.values())
    if cells > MAX_CELLS:
        raise ValueError(f"the grid has {cells:,} cells (at most {MAX_CELLS:,} in a sweep)")
    return grid


def sweepable_settings() -> list[str]:
    """The settings a sweep can vary: every numeric one (int or float, not a switch), but the market's seed."""
    return sorted(n for n, f in Settings.model_fields.items() if f.annotation in (int, float) and n not in NOT_SWEPT)


def sweep_value(name: str, value: Any) -> int | float:
    """``value`` as setting ``name`` takes it, within the setting's own bounds; a clear error names both."""
    from typing import Annotated

    from pydantic import TypeAdapter, ValidationError

    if name in NOT_SWEPT:
        raise ValueError(f"--sweep {name}: {NOT_SWEPT[name]}")
    field = Settings.model_fields.get(name)
    if field is None:
        raise ValueError(f"--sweep {name}: {unknown_setting_message(name, aliases=True)}")
    if field.annotation not in (int, float):
        raise ValueError(f"--sweep {name}: not a numeric setting (a sweep varies numbers such as cutoff_delta, "
                         f"mixer_cooldown_s, risk_per_trade, stop_loss_pct, basket_neg_ratio, tier_a_interval_s)")
    try:
        out = TypeAdapter(Annotated[(field.annotation, *field.metadata)]).validate_python(value)
    except ValidationError as e:
        raise ValueError(f"--sweep {name.upper()}={value!r}: {e.errors()[0]['msg']}") from None
    if isinstance(out, float) and not math.isfinite(out):
        raise ValueError(f"--sweep {name.upper()}={value!r}: not a finite number")
    return out


def grid_cells(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    cells: list[dict[str, Any]] = [{}]
    for name, values in grid.items():
        cells = [{**c, name: v} for c in cells for v in values]
    return cells


def shared_feed(settings: Settings, *, days: int = 0, seed: int, start: date, end: date | None = None,
                bars_file: str | Path | None = None, market: MarketData | None = None,
                today: date | None = None) -> MarketFeed:
    """The bars of a replay, scored once: every sweep cell replays on this feed. Only the range's sessions (and
    the feed's few days of warm-up before them) are loaded: no bar after the range's last session is scored."""
    from core.strategy import load_strategy

    if market is None:
        market = build_market(settings, seed=seed, start=start, bars_file=bars_file, days=days, end=end, today=today)
    feed = MarketFeed(market, load_strategy(settings.strategy), settings.universe.all_symbols)
    preload(feed, replay_days(settings, start, days, market, end), settings)  # read back when scored before
    return feed


_WORKER_FEED: MarketFeed | None = None


def _init_worker(feed: MarketFeed) -> None:
    global _WORKER_FEED
    _WORKER_FEED = feed


SweepJob = tuple[dict[str, Any], dict[str, Any], int, int, str, str | None]


RETURNS_KEY = "_session_returns"  # a cell's per-session returns ride in its row until run_sweep takes them out


def session_returns(store: Store, sessions: list[date], start_equity: float) -> list[float]:
    """One return per session of a run: each session's last equity against the previous session's (the first
    against the starting equity); a session without an equity sample returns 0. What PBO and the deflated
    Sharpe read (core.research.overfitting)."""
    from core.clock import trading_date

    last: dict[date, float] = {}
    for r in store.query("SELECT ts, equity FROM equity ORDER BY ts"):
        last[trading_date(datetime.fromisoformat(r["ts"]))] = float(r["equity"])
    out, prev = [], start_equity
    for day in sessions:
        v = last.get(day, prev)
        out.append(v / prev - 1.0 if prev else 0.0)
        prev = v
    return out


def cell_row(cell: dict[str, Any], stats: dict[str, Any]) -> dict[str, Any]:
    """One sweep row: the cell's settings, its research metrics (``pnl_total`` and ``pnl_realized`` among them)
    and order count."""
    return {**cell, **{k: v for k, v in stats["metrics"].items() if k != "suppressed"}, "orders": stats["orders"]}


def _sweep_cell(args: SweepJob, feed: MarketFeed | None = None,
                progress: Callable[[int, int], bool | None] | None = None) -> dict[str, Any] | None:
    """One cell replayed on the shared feed (a worker's, or ``feed``); None when ``progress`` cancelled it."""
    base, cell, days, seed, start_s, end_s = args
    from core.config import load_settings

    return replay_cell(load_settings(**{**base, **cell}), cell, days=days, seed=seed, start_s=start_s, end_s=end_s,
                       feed=feed or _WORKER_FEED, progress=progress)


def replay_cell(settings: Settings, cell: dict[str, Any], *, days: int, seed: int, start_s: str, end_s: str | None,
                feed: MarketFeed | None, progress: Callable[[int, int], bool | None] | None = None
                ) -> dict[str, Any] | None:
    """The row of one cell whose settings are resolved (a Dask worker gets them whole: its own environment and
    .env must not change a result); None when ``progress`` cancelled it."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        res = run_replay(settings, days=days, seed=seed, start=date.fromisoformat(start_s),
                         end=date.fromisoformat(end_s) if end_s else None, db_path=str(Path(tmp) / "sweep.db"),
                         feed=feed, decisions=SUMMARY, progress=progress)
        stats = res.stats
        try:
            if stats.get("cancelled"):
                return None
            days_run = replay_days(settings, date.fromisoformat(start_s), days, res.engine.feed.market,
                                   date.fromisoformat(end_s) if end_s else None)
            returns = session_returns(res.store, days_run, settings.sim_start_cash)
        finally:
            res.store.close()
    return {**cell_row(cell, stats), RETURNS_KEY: returns}


class SweepRows(list):  # type: ignore[type-arg]
    """The rows of a sweep (a list of dicts, grid order); ``cancelled`` is True when ``progress`` returned False:
    the rows are then those of the cells finished by then. ``refused``: the cells a rule between settings refused
    (``{**cell, "refused": message}``, grid order), never run; ``where``: where the cells ran. ``returns``: each
    row's per-session returns (``session_returns``), in row order; ``index``: each row's position in the cells
    asked for."""

    cancelled: bool = False

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.refused: list[dict[str, Any]] = []
        self.where = "here"
        self.returns: list[list[float]] = []
        self.index: list[int] = []

    def take(self, results: dict[int, dict[str, Any]], positions: list[int]) -> None:
        """The finished cells' rows in cell order, their returns set apart; ``positions[i]``: where the i-th cell
        that ran stands in the cells asked for (a refused cell did not run)."""
        for i in sorted(results):
            row = dict(results[i])
            self.returns.append(row.pop(RETURNS_KEY, []))
            self.index.append(positions[i])
            self.append(row)


def split_refused(base: dict[str, Any], cells: list[dict[str, Any]]
                  ) -> tuple[list[tuple[dict[str, Any], Settings]], list[dict[str, Any]]]:
    """The cells whose settings load (with them), and the refused ones with the rule's message: a cell such as
    MAX_CONCURRENT_RISK below RISK_PER_TRADE is reported, not a crash of the whole sweep. When no cell loads, the
    sweep itself is refused: the base settings' own error, or the first cell's."""
    from core.config import ConfigError, load_settings

    ok: list[tuple[dict[str, Any], Settings]] = []
    refused: list[dict[str, Any]] = []
    for c in cells:
        try:
            ok.append((c, load_settings(**{**base, **c})))
        except ConfigError as e:
            refused.append({**c, "refused": str(e)})
    if not ok:
        load_settings(**base)  # a bad base setting is the sweep's error, named as such
        first = refused[0]
        where = ", ".join(f"{k}={v}" for k, v in first.items() if k != "refused")
        raise ValueError(f"every cell of the grid is refused by a settings rule ({len(refused)} cells), e.g. "
                         f"{where}: {first['refused']}")
    return ok, refused


def run_sweep(base: dict[str, Any], grid: dict[str, list[Any]], *, days: int = 0, seed: int, start: date,
              end: date | None = None, bars_file: str | None = None, market: MarketData | None = None,
              today: date | None = None, workers: int = 2,
              progress: Callable[[int, int], bool | None] | None = None,
              on_workers: Callable[[list[int]], None] | None = None,
              cluster: str | None = None, connect_timeout_s: float | None = None, pool: Any = None) -> SweepRows:
    """Every grid cell replayed over [start, end] (or ``days`` sessions from ``start``) on bars scored once.

    ``market``: a prepared market (see ``run_replay``) instead of ``build_market``. Without ``cluster``, with
    ``workers`` > 1 each cell runs in a spawned worker process (safe from threaded callers such as Streamlit) that
    receives the scored feed when it starts (``core.research.workers``; ``on_workers(pids)`` is told their ids).
    With ``cluster`` (a Dask scheduler's ``tcp://host:port``), every cell is a task of that cluster
    (``core.research.cluster``): a synthetic market is regenerated from the seed on each worker, other bars are
    scored here and sent to every worker once; ``connect_timeout_s`` (default: DASK_CONNECT_TIMEOUT_S) bounds the
    wait for the scheduler. The rows are the same either way.

    Cells that a rule between settings refuses are not run: they are ``rows.refused``, outside the progress
    count. ``progress(done, total)`` (cells that run) is called when a cell ends and at least every
    ``workers.HEARTBEAT_S`` while cells run (in-process: every ``PROGRESS_EVERY`` ticks), so a UI can interrupt
    a long cell. Returning False stops the sweep: the workers are terminated and reaped (on a cluster: the tasks
    not finished are cancelled and running cells stop at their next check), and the rows finished so far come
    back with ``cancelled = True``. Anything ``progress`` raises (Streamlit's stop exception) stops them the same
    way and propagates. ``pool``: the caller's ``workers.WorkerPool``, kept warm for its next sweep (a walk-forward's
    folds)."""
    return run_cell_list(base, grid_cells(grid), days=days, seed=seed, start=start, end=end, bars_file=bars_file,
                         market=market, today=today, workers=workers, progress=progress, on_workers=on_workers,
                         cluster=cluster, connect_timeout_s=connect_timeout_s, pool=pool)


def run_cell_list(base: dict[str, Any], cells: list[dict[str, Any]], *, days: int = 0, seed: int, start: date,
                  end: date | None = None, bars_file: str | None = None, market: MarketData | None = None,
                  today: date | None = None, workers: int = 2,
                  progress: Callable[[int, int], bool | None] | None = None,
                  on_workers: Callable[[list[int]], None] | None = None,
                  cluster: str | None = None, connect_timeout_s: float | None = None,
                  feed: MarketFeed | None = None, pool: Any = None) -> SweepRows:
    """``run_sweep`` of any list of cells (a search's trials are cells too): the same machinery, rows in the
    order of ``cells`` (``rows.index`` says which). ``feed``: bars already scored by ``shared_feed`` for these
    cells' range (a search scores them once for all its batches; not used on a cluster that regenerates them).
    ``pool``: a ``workers.WorkerPool`` whose processes stay up for the caller's next list (a search's batches)."""
    from core.research.workers import HEARTBEAT_S, run_cells

    ok, refused = split_refused(base, cells)
    ran = {id(c) for c, _ in ok}
    positions = [i for i, c in enumerate(cells) if id(c) in ran]
    start_s, end_s = start.isoformat(), end.isoformat() if end else None
    cells_progress = progress
    out = SweepRows()
    out.refused = refused
    first = ok[0][1]  # the strategy and universe are not sweep dimensions: one scored feed serves every cell
    if cluster:
        from core.research import cluster as dask_cluster

        regenerate = market is None and bars_file is None and first.market_data != "alpaca"
        feed = None if regenerate else feed or shared_feed(first, days=days, seed=seed, start=start, end=end,
                                                           bars_file=bars_file, market=market, today=today)
        jobs = [dask_cluster.CellJob(dask_cluster.shipped_settings(st), c, days, seed, start_s, end_s)
                for c, st in ok]
        results, out.cancelled, out.where = dask_cluster.run_cells(
            cluster, jobs, feed=feed, timeout_s=connect_timeout_s or first.dask_connect_timeout_s,
            cell=replay_cell, make_feed=shared_feed,
            progress=cells_progress if progress is not None else None)
        out.take(results, positions)
        return out
    sweep_jobs: list[SweepJob] = [(base, c, days, seed, start_s, end_s) for c, _ in ok]
    if feed is None:
        feed = shared_feed(first, days=days, seed=seed, start=start, end=end, bars_file=bars_file,
                           market=market, today=today)
    if workers <= 1:
        out.where = "here, in this process"
        results: dict[int, dict[str, Any]] = {}
        for i, j in enumerate(sweep_jobs):
            beat = _Heartbeat(cells_progress, i, len(sweep_jobs), HEARTBEAT_S)
            row = _sweep_cell(j, feed, beat if progress is not None else None)
            if row is None or beat.cancelled:
                out.cancelled = True
                break
            results[i] = row
            if progress is not None and cells_progress(i + 1, len(sweep_jobs)) is False:
                out.cancelled = True
                break
    else:
        out.where = f"here, in {min(workers, len(sweep_jobs))} processes"
        kw: dict[str, Any] = {"initializer": _init_worker, "initargs": (feed,), "on_workers": on_workers,
                              "progress": cells_progress if progress is not None else None}
        if pool is None:
            results, out.cancelled = run_cells(_sweep_cell, sweep_jobs, workers=workers, **kw)
        else:  # the caller's processes, warm from its previous list
            results, out.cancelled = pool.run(_sweep_cell, sweep_jobs, **kw)
    out.take(results, positions)
    return out


class SweepClock:
    """A sweep's progress in words: cells done / total, elapsed since the clock was made, and the time left at
    the pace so far. ``now``: seconds of a monotonic clock (tests pass their own)."""

    def __init__(self, now: Callable[[], float] = time.monotonic) -> None:
        self.now = now
        self.t0 = now()

    def text(self, done: int, total: int, unit: str = "cells") -> str:
        elapsed = self.now() - self.t0
        left = total - done
        if left <= 0:
            eta = "done"
        elif done <= 0:
            eta = "time left: estimating"
        else:
            left_s = elapsed / done * left
            eta = "under 1 s left" if left_s < 1 else f"about {_duration(left_s)} left"
        return f"{done}/{total} {unit}, {_duration(elapsed)} elapsed, {eta}"


def _duration(s: float) -> str:
    s = max(0.0, s)
    if s < 1:
        return "under 1 s"
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


class _Heartbeat:
    """A cell replayed in this process: its tick progress becomes the sweep's ``(cells done, total)``, at most
    every ``every_s`` (a False from the caller cancels the cell)."""

    def __init__(self, progress: Callable[[int, int], bool | None] | None, done: int, total: int,
                 every_s: float) -> None:
        self.progress, self.done, self.total, self.every_s = progress, done, total, every_s
        self.last = time.monotonic()
        self.cancelled = False

    def __call__(self, _ticks: int, _total: int) -> bool:
        now = time.monotonic()
        if self.progress is None or now - self.last < self.every_s:
            return True
        self.last = now
        if self.progress(self.done, self.total) is False:
            self.cancelled = True
            return False
        return True

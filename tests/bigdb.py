"""A database holding a year of history, built in seconds (issue 15: large histories must not slow a tick).

A year's replay takes about a minute; instead a few real sessions are replayed (``core.research.replay.run_replay``,
auto mode, every decision in ``signals``) and their rows are copied back in time, block by block, with every
timestamp shifted by whole weeks, until the decision log holds a year's worth (~880k rows, as a 252-session
replay writes). Copies get negative integer ids (older rows, smaller ids, as a real journal), suffixed text ids,
and only finished business: no copied intent, order or bracket leg is still live, so the engine's book and the
simulated broker start from exactly the state the replay left. ``llm_calls`` gets one answered call per
actionable signal (about a year's worth under the 120-a-day limit) so the LLM gate's queries meet a full table.

The live engine continues the replayed market: ``sim_anchor`` is the replay's first session and ``sim_clock``
one minute after the next session's open (``live_start``).
"""

from __future__ import annotations

import math
import sqlite3
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from core.clock import session_bounds, trading_sessions
from core.config import load_settings
from core.research.replay import run_replay
from core.state.book import Book
from core.state.store import Store

BASE_START = date(2025, 1, 2)
BASE_SESSIONS = 9  # 2025-01-02 .. 2025-01-15: two calendar weeks
SEED = 7
YEAR_SIGNALS = 880_000  # what a 252-session replay of the default universe writes
ID_STRIDE = 10_000_000  # copy k of an integer id: id - k * ID_STRIDE (negative: older than every real row)


def _iso(col: str, days: int) -> str:
    """An ISO timestamp column moved ``days`` back, its offset (and fraction) kept as written."""
    return f"strftime('%Y-%m-%dT%H:%M:%S', substr({col}, 1, 19), '-{days} days') || substr({col}, 20)"


# table -> {column: kind}; kinds: iso (ISO text time), date, epoch (REAL seconds), id (integer, made negative),
# tag (text id, suffixed), month (of the moved ``day``). Other columns are copied as they are.
COPIED: dict[str, dict[str, str]] = {
    "signals": {"id": "id", "ts": "iso", "bar_ts": "iso"},
    "intents": {"id": "tag", "client_order_id": "tag", "created_at": "iso", "expires_at": "iso",
                "decided_at": "iso"},
    "orders": {"client_order_id": "tag", "broker_order_id": "tag", "intent_id": "tag", "submitted_at": "iso",
               "updated_at": "iso"},
    "fills": {"id": "tag", "client_order_id": "tag", "ts": "iso"},
    "trades": {"id": "id", "entry_ts": "iso", "exit_ts": "iso"},
    "equity": {"ts": "iso"},
    "day_state": {"date": "date", "created_at": "iso"},
    "token_stats": {"minute": "iso"},
    "notifications": {"id": "id", "ts": "iso"},
    "protections": {"id": "id", "fired_at": "iso", "until": "iso", "pause_until": "iso", "released_at": "iso"},
    "param_audit": {"id": "id", "ts": "iso"},
    "llm_calls": {"id": "id", "ts": "iso", "done_at": "iso", "day": "date", "month": "month",
                  "event_id": "tag"},
    "sim_orders": {"id": "tag", "client_order_id": "tag", "parent_id": "tag", "submitted_at": "epoch",
                   "active_from": "epoch", "checked_until": "epoch"},
    "sim_fills": {"seq": "id", "id": "tag", "order_id": "tag", "client_order_id": "tag", "ts": "epoch"},
}


@dataclass
class YearDb:
    path: str
    base: str | None  # the replayed sessions alone (the year's last two weeks, without the history before them)
    live_start: datetime  # first market time of the live engine (UTC)
    counts: dict[str, int]


def live_start_after(last_session: date) -> datetime:
    nxt = trading_sessions(last_session + timedelta(days=1), 1)[0]
    return session_bounds(nxt)[0].astimezone(UTC) + timedelta(minutes=1)  # type: ignore[index]


def continue_market(path: str, live_start: datetime) -> None:
    """Meta the app's runtime reads: the replayed synthetic market (anchor) and where its clock stands."""
    store = Store(path)
    store.set_meta("sim_anchor", BASE_START.isoformat())
    store.set_meta("sim_clock", live_start.isoformat())
    store.commit()
    store.close()


def build_year_db(path: str, *, base: str | None = None, sessions: int = BASE_SESSIONS,
                  signals: int = YEAR_SIGNALS) -> YearDb:
    """The year's database at ``path``; with ``base``, a copy of the replayed sessions alone there too."""
    # MIN_POSITION_FRACTION=0: the replay this history was designed and measured on (README, Benchmarks), which
    # ends flat, so a quiet tick on the year's database does what one on an empty database does. With the default
    # 0.25 the same sessions end holding three positions, whose bracket legs every tick checks (more statements
    # than an empty database's tick: not what the history tests measure).
    res = run_replay(load_settings(auto_mode=True, min_position_fraction=0.0), days=sessions, seed=SEED,
                     start=BASE_START, db_path=path, decisions="full")
    live = set(Book(res.store).intents)  # intents still live at the end of the replay: never copied
    res.store.close()
    days = trading_sessions(BASE_START, sessions)
    shift = 7 * math.ceil(((days[-1] - days[0]).days + 1) / 7)  # whole weeks: blocks never overlap
    # and the newest copy ends before the month of the replayed sessions (monthly figures such as the LLM
    # spend see the same rows with or without the history)
    gap = 7 * math.ceil(max(0, (days[-1] - days[0].replace(day=1)).days + 1 - shift) / 7)
    conn = sqlite3.connect(path, isolation_level=None)
    # a bulk load into a file nobody else has open: no journal, a large page cache
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-262144")
    # the LLM gate's history: one answered call per actionable signal
    conn.execute(
        "INSERT INTO llm_calls(ts, day, month, symbol, event_id, kind, vol_spike, score, status, called,"
        " prompt_tokens, completion_tokens, cost, latency_ms, sentiment, confidence, rationale, done_at)"
        " SELECT ts, date(ts, '-5 hours'), strftime('%Y-%m', ts, '-5 hours'), symbol,"
        " 'spike:' || symbol || ':' || bar_ts, 'spike', vol_spike, score, 'ok', 1, 900, 60, 0.24, 800.0,"
        " score / 2, 0.6, 'synthetic', strftime('%Y-%m-%dT%H:%M:%S', substr(ts, 1, 19), '+2 seconds')"
        " || substr(ts, 20) FROM signals WHERE decision = 'actionable' ORDER BY id")
    if base is not None:
        conn.execute("VACUUM INTO ?", (base,))
    base_signals = conn.execute("SELECT COUNT(*) FROM signals").fetchone()[0]
    copies = max(0, math.ceil(signals / base_signals) - 1)
    keep = {
        "intents": (f"id NOT IN ({','.join('?' * len(live))})", tuple(live)),
        "orders": ("status IN ('filled','canceled','rejected','expired')", ()),
        "sim_orders": ("status NOT IN ('new','held')", ()),
    }
    conn.execute("BEGIN")
    for table in COPIED:
        where, params = keep.get(table, ("1", ()))
        conn.execute(f"CREATE TEMP TABLE base_{table} AS SELECT * FROM {table} WHERE {where}", params)
    for k in range(1, copies + 1):
        for table, kinds in COPIED.items():
            cols = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
            exprs = [_copy_expr(c, kinds.get(c), k, gap + k * shift) for c in cols]
            conn.execute(f"INSERT INTO {table}({', '.join(cols)}) SELECT {', '.join(exprs)} FROM base_{table}")
    conn.execute("COMMIT")
    conn.execute("PRAGMA journal_mode=WAL")
    counts = {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in COPIED}
    conn.close()
    start = live_start_after(days[-1])
    for db in (path, base):
        if db is not None:
            continue_market(db, start)
    return YearDb(path, base, start, counts)


def _copy_expr(col: str, kind: str | None, k: int, days: int) -> str:
    if kind == "iso":
        return _iso(col, days)
    if kind == "date":
        return f"date({col}, '-{days} days')"
    if kind == "month":  # of the moved New York date
        return f"substr(date(day, '-{days} days'), 1, 7)"
    if kind == "epoch":
        return f"{col} - {days * 86400}"
    if kind == "id":
        return f"{col} - {k * ID_STRIDE}"
    if kind == "tag":
        return f"{col} || '~{k}'"
    return col


# ---------------------------------------------------------------- the live engine on it
def live_settings(path: str) -> Any:
    """The app's settings for a live engine on ``path``, every optional path of a tick switched on: the LLM
    gate (its calls are only queued: no job makes them) and EDGAR events. Generous risk limits, so the replay's
    open positions leave room for the scripted entry."""
    return load_settings(db_path=path, engine_jobs=False, auto_mode=True, seed=SEED,
                         strategy="tests.fakes.strategies:BullishSpike", llm_enabled=True,
                         llm_base_url="http://127.0.0.1:9/v1", edgar_enabled=True,
                         edgar_user_agent="bigdb test@example.com", max_exposure=1.0, max_concurrent_risk=0.1,
                         max_positions=10)


def free_symbol(path: str) -> str:
    """A Tier-A stock the book at ``path`` neither holds nor has a live intent for (the scripted entry's)."""
    store = Store(path, readonly=True)
    try:
        book = Book(store)
        busy = book.holds() | {r["symbol"] for r in book.intents.values()}
    finally:
        store.close()
    return next(s for s in load_settings().universe.tiers["A"] if s not in busy)


# ---------------------------------------------------------------- a long trade history (issue 17: pages stay fast)
def add_closed_trades(path: str, n: int, *, seed: int = SEED) -> int:
    """Add ``n`` finished round trips (trade, buy and sell order, two fills) spread over the sessions the
    equity table covers, each inside its session; deterministic for a seed. Returns the trades now held."""
    import numpy as np

    conn = sqlite3.connect(path, isolation_level=None)
    first, last = conn.execute("SELECT MIN(ts), MAX(ts) FROM equity").fetchone()
    if first is None:
        raise ValueError(f"{path}: no equity rows to place trades in")
    days = [d for d in trading_sessions(datetime.fromisoformat(first).date(), 400)
            if d <= datetime.fromisoformat(last).date()]
    opens = np.array([session_bounds(d)[0].timestamp() for d in days])  # type: ignore[index]
    rng = np.random.default_rng(seed)
    symbols = list(load_settings().universe.tiers["A"])
    day = rng.integers(0, len(opens), n)
    entry = opens[day] + 60 * rng.integers(1, 330, n)
    exit_ = entry + 60 * rng.integers(1, 30, n)  # out before the close (6.5 h session)
    price = rng.uniform(50, 500, n)
    ret = rng.normal(0.0005, 0.01, n)
    qty = rng.integers(1, 200, n).astype(float)
    sym = rng.integers(0, len(symbols), n)

    def ts(x: float) -> str:
        return datetime.fromtimestamp(float(x), UTC).isoformat()

    trades, orders, fills = [], [], []
    for i in range(n):
        e, x, p, r, q, s = ts(entry[i]), ts(exit_[i]), float(price[i]), float(ret[i]), float(qty[i]), symbols[sym[i]]
        px = p * (1 + r)
        trades.append((s, "entry", q, e, p, x, px, q * (px - p), r, "take_profit" if r > 0 else "stop_loss",
                       min(r, 0.0) - 0.001, max(r, 0.0) + 0.001, 0.0))
        for side, t, fp in (("buy", e, p), ("sell", x, px)):
            coid = f"bulk-{seed}-{i}-{side}"
            orders.append((coid, f"b{coid}", s, side, q, "market", "filled", t, t, q, fp))
            fills.append((f"{coid}-fill", coid, s, side, q, fp, 0.0, t))
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO trades(symbol, kind, qty, entry_ts, entry_price, exit_ts, exit_price, pnl, ret,"
                     " exit_reason, mae, mfe, fees) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", trades)
    conn.executemany("INSERT INTO orders(client_order_id, broker_order_id, symbol, side, qty, type, status,"
                     " submitted_at, updated_at, filled_qty, filled_avg_price) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                     orders)
    conn.executemany("INSERT INTO fills(id, client_order_id, symbol, side, qty, price, fee, ts)"
                     " VALUES (?,?,?,?,?,?,?,?)", fills)
    conn.execute("COMMIT")
    total = conn.execute("SELECT COUNT(*) FROM trades").fetchone()[0]
    conn.close()
    return int(total)

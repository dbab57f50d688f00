"""Replay one live trading session and explain every difference (issue 28).

The live engine journals its inputs (``core.engine.journal``): the state at the session's first call, every outside
call with its market and wall time, the commands each call applied. ``replay_session`` builds a fresh ``Engine`` on
a scratch database from that state, over a simulated broker seeded with the live account and the day's bars, and
calls the same entry points at the same times with the same commands (parameter changes, approvals, rejections,
closes, flatten, pause arrive as the commands they were). Where live did not tick for a while (a gap in the
journal), the replay ticks at the live cadence, as research would have.

The day's bars: the synthetic market rebuilt from (seed, date), the recorded file, or for an Alpaca session the
bars live received (kept in the local bar cache by ``core.venues.alpaca.bar_cache.LiveBarKeeper``) beside the
history endpoint's copy of the same day (``alpaca_session_bars``): the replay trades on the history's bars, and a bar
that differs from the one live received is the ``data`` cause. Without a history (no keys, nothing cached, offline)
it trades on the kept live bars, and says so.

Then ``compare`` matches the two databases table by table (decisions, intents, orders, fills, trades, protections,
equity) and gives each difference a cause from ``CAUSES``; the summary splits the P&L difference by cause. A
difference with evidence of its own gets that cause (a gap, a broker failure, an outside order, a fill price, a bar
that changed); one without inherits the cause of the earliest difference before it on the same symbol, else of the
symbol whose difference weighs most on the account at that time (the P&L difference for an equity row, the
difference in cash and holdings for another symbol's row), else of the session's first difference; the first
difference without any evidence is ``unexplained`` -- or ``rule_change`` when the session was
traded by another version of the trading code. Nothing differs silently.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from pydantic import SecretStr

from core.clock import previous_session
from core.config import Settings, load_settings
from core.engine import Engine
from core.engine.intents import client_order_id_for
from core.engine.journal import code_version
from core.exports import to_csv_bytes
from core.feed import MarketFeed
from core.state.store import Store, iso
from core.strategy import Strategy
from core.venues.broker import Account, BrokerError, BrokerPosition
from core.venues.marketdata import BAR_COLUMNS, MarketData
from core.venues.sim.bar_files import ReplayMarket, load_bars
from core.venues.sim.broker import _SCHEMA as SIM_SCHEMA
from core.venues.sim.broker import SimBroker
from core.venues.sim.synthetic import SyntheticMarket

# the fixed list of causes (issue 28), and what is left when none applies
FILL_PRICE, DATA, TIMING, BROKER, RESTART, OUTSIDE_ORDER, RULE_CHANGE = (
    "fill_price", "data", "timing", "broker", "restart", "outside_order", "rule_change")
CAUSES = (FILL_PRICE, DATA, TIMING, BROKER, RESTART, OUTSIDE_ORDER, RULE_CHANGE)
UNEXPLAINED = "unexplained"
CAUSE_WORDS = {
    FILL_PRICE: "fill price: the live fill against the simulated fill model",
    DATA: "data: the replayed bar differs from the bar live saw",
    TIMING: "timing: live ticked late or skipped ticks (the journal shows the gap)",
    BROKER: "broker: a rejection, an outage or a partial fill",
    RESTART: "restart: the engine was down",
    OUTSIDE_ORDER: "outside order: an order this engine did not send",
    RULE_CHANGE: "rule or code change since the session was traded",
    UNEXPLAINED: "no cause found: live and research disagree",
}
KINDS = ("matched", "only_live", "only_replay", "different")
HISTORY_LOOKBACK_S = 6 * 3600  # history copied before the session's start: every protection window reads < 2 h
GAP_FACTOR = 3.0  # a pause between live ticks longer than this many cadences (and a minute) is a gap
# engine settings a replay never takes from the live record: it runs here, on the simulator, with no services
_REPLAY_OVERRIDES = {"broker": "sim", "engine_jobs": False, "llm_enabled": False, "edgar_enabled": False,
                     "slack_webhook_url": None, "redis_url": None, "db_path": ":memory:"}


class SessionReplayError(ValueError):
    """The session cannot be replayed (no journal for that date, no bars); the message says why."""


@dataclass
class Difference:
    table: str
    key: str
    kind: str  # one of KINDS but matched
    ts: str
    symbol: str | None
    fields: dict[str, list[Any]]  # name -> [live, replay]
    cause: str = UNEXPLAINED
    why: str = ""
    live_row: dict[str, Any] | None = field(default=None, repr=False)
    replay_row: dict[str, Any] | None = field(default=None, repr=False)

    def row(self) -> dict[str, Any]:
        return {"ts": self.ts, "table": self.table, "key": self.key, "symbol": self.symbol, "kind": self.kind,
                "cause": self.cause, "why": self.why,
                "live": json.dumps({k: v[0] for k, v in self.fields.items()}, default=str),
                "replay": json.dumps({k: v[1] for k, v in self.fields.items()}, default=str)}


@dataclass
class SessionReplay:
    day: date
    live_version: str
    replay_version: str
    calls: int
    gap_ticks: int
    differences: list[Difference]
    matched: dict[str, int]
    summary: dict[str, Any]
    equity_live: list[list[Any]]
    equity_replay: list[list[Any]]
    gaps: list[dict[str, Any]] = field(default_factory=list)
    elapsed_s: float = 0.0
    bars_source: str = ""  # where the replay's bars came from (and, for Alpaca, what they were compared with)

    @property
    def first_divergence(self) -> Difference | None:
        return self.differences[0] if self.differences else None

    def table(self) -> pd.DataFrame:
        cols = ["ts", "table", "key", "symbol", "kind", "cause", "why", "live", "replay"]
        return pd.DataFrame([d.row() for d in self.differences], columns=cols)

    def to_csv(self) -> bytes:
        return to_csv_bytes(self.table())  # escaped like every CSV the app writes (core.exports)

    def to_dict(self) -> dict[str, Any]:
        return {"day": self.day.isoformat(), "live_version": self.live_version, "replay_version": self.replay_version,
                "calls": self.calls, "gap_ticks": self.gap_ticks, "gaps": self.gaps, "matched": self.matched,
                "summary": self.summary, "differences": [d.row() for d in self.differences],
                "first_divergence": self.first_divergence.row() if self.first_divergence else None,
                "equity_live": self.equity_live, "equity_replay": self.equity_replay,
                "elapsed_s": round(self.elapsed_s, 3), "bars_source": self.bars_source}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), default=str, sort_keys=True)


# ================================================================ the replay
def live_sessions(store: Store) -> list[str]:
    """The New York dates the live engine journalled a session for, newest first."""
    return [r["date"] for r in store.query("SELECT date FROM session_snapshots ORDER BY date DESC")]


def replay_settings(record: dict[str, Any], **overrides: Any) -> Settings:
    """The settings the session traded with (as journalled, without secrets), run on the simulator here."""
    known = set(Settings.model_fields)
    values = {k: v for k, v in record.items() if k in known}
    values.update(_REPLAY_OVERRIDES)
    if values.get("market_data") == "alpaca":
        # the replay is handed the day's bars (alpaca_session_bars): no Alpaca client, so no keys, are needed
        values["market_data"] = "synthetic"
    values.update(overrides)
    return load_settings(_env_file=None, **values)


_ALPACA_ACCESS = ("alpaca_api_key", "alpaca_secret_key", "alpaca_data_url", "alpaca_timeout_s", "alpaca_max_retries",
                  "alpaca_requests_per_min", "alpaca_cache_dir")
HISTORY_WARMUP_SESSIONS = 3  # sessions of bars before the day (the indicators' warm-up), as research replays take


def alpaca_session_bars(settings: Settings, day: date, *, history: Settings | None = None,
                        today: date | None = None) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """(the bars to replay on, the bars live received, where the first came from) for an Alpaca session.

    The live bars are the bar cache's (``core.venues.alpaca.bar_cache``, under ``settings.alpaca_cache_dir``). The
    bars to replay on are the history endpoint's for the same sessions: through ``history``'s keys and server when
    it has keys (completed days, those before ``today``, are cached), else from the history cache alone when it
    holds every day; failing both, the live bars themselves (then no bar can differ, and the source says why)."""
    from core.venues.alpaca.bar_cache import live_root, read_live_bars

    first = day
    for _ in range(HISTORY_WARMUP_SESSIONS):
        first = previous_session(first)
    symbols = settings.universe.all_symbols
    cache_dir = history.alpaca_cache_dir if history is not None else settings.alpaca_cache_dir
    kept = read_live_bars(live_root(cache_dir, settings.alpaca_feed), symbols, first, day)
    live = kept[BAR_COLUMNS] if not kept.empty else None
    src = settings.model_copy(update={k: getattr(history, k) for k in _ALPACA_ACCESS}) if history else settings
    has_keys = bool(src.alpaca_api_key and src.alpaca_api_key.get_secret_value().strip())
    why_not = ""
    try:
        from core.research.replay import research_market_data

        if not has_keys:  # alpaca-py refuses a client without keys; this one reads the cache and is never asked
            fake_key = SecretStr("cache-only")
            src = src.model_copy(update={"alpaca_api_key": fake_key, "alpaca_secret_key": fake_key})
        md = research_market_data(src)
        cover = md.cached_days(symbols, first, day)
        if not has_keys and (cover.missing or cover.partial):
            why_not = "no Alpaca keys here and the history cache lacks some of its days"
        else:
            frame = md.history(symbols, first, day, today=today or day)  # the day itself is cached once complete
            if not frame.empty:
                feed = settings.alpaca_feed
                return frame, kept, f"Alpaca history ({feed}), compared with the {len(kept):,} bars live received"
            why_not = "the history endpoint returned no bars"
    except (BrokerError, ValueError, OSError) as e:
        why_not = f"history not available: {e}"
    if live is None:
        raise SessionReplayError(f"no bars for the Alpaca session of {day}: none kept live "
                                 f"({live_root(cache_dir, settings.alpaca_feed)}) and {why_not}")
    return live, kept, f"the {len(live):,} bars live received ({why_not}: no revised bar can be found)"


def session_market(settings: Settings, day: date, bars: pd.DataFrame | None = None) -> MarketData:
    """The day's bars as research sees them: the synthetic market rebuilt from (seed, date), the recorded file, or
    the given bars (Alpaca history from the cache)."""
    if bars is not None:
        return ReplayMarket(bars)
    if settings.market_data == "synthetic":
        return SyntheticMarket(seed=settings.seed, universe=settings.universe, anchor=previous_session(day))
    if settings.market_data == "replay" and settings.bars_file:
        return ReplayMarket(load_bars(settings.bars_file))
    raise SessionReplayError(f"MARKET_DATA={settings.market_data}: pass the day's bars (bars=) to replay it")


def replay_session(live: Store, day: date | str, *, bars: pd.DataFrame | None = None,
                   live_bars: pd.DataFrame | None = None, strategy: Strategy | None = None,
                   work_db: str = ":memory:", settings_overrides: dict[str, Any] | None = None,
                   history: Settings | None = None, today: date | None = None) -> SessionReplay:
    """Replay the live session of New York date ``day`` from ``live``'s journal and compare it with what live did.

    ``bars``: the day's bars for research (for an Alpaca session, found by ``alpaca_session_bars`` when not given);
    ``live_bars``: the bars live received (default: the bar cache's), so a bar revised since is labelled ``data``;
    ``history``: the settings whose Alpaca keys, server and cache fetch the history (the app's own; the journal
    keeps no secret); ``today``: days before it are complete (cached); ``strategy``: the strategy object when it is
    not the configured one (tests)."""
    t0 = time.perf_counter()
    day_s = day.isoformat() if isinstance(day, date) else str(day)
    snap_row = live.one("SELECT * FROM session_snapshots WHERE date=? ORDER BY ts LIMIT 1", (day_s,))
    if snap_row is None:
        have = ", ".join(live_sessions(live)[:5]) or "none"
        raise SessionReplayError(f"no live session journalled on {day_s} (sessions: {have})")
    snap = json.loads(snap_row["json"])
    calls = live.query("SELECT * FROM engine_calls WHERE day=? ORDER BY id", (day_s,))
    if not calls:
        raise SessionReplayError(f"the session of {day_s} has a snapshot but no engine calls")
    settings = replay_settings(snap["settings"], **(settings_overrides or {}))
    bars_source = "the bars given" if bars is not None else ""
    if bars is None and snap["settings"].get("market_data") == "alpaca":
        bars, kept, bars_source = alpaca_session_bars(settings, date.fromisoformat(day_s), history=history,
                                                      today=today)
        live_bars = kept if live_bars is None else live_bars
    elif bars is None:
        bars_source = (f"the synthetic market of seed {settings.seed}, rebuilt for the date"
                       if settings.market_data == "synthetic" else f"the file {settings.bars_file}")
    market = session_market(settings, date.fromisoformat(day_s), bars)
    store = Store(work_db)
    store.execute("PRAGMA synchronous=OFF")  # scratch: rebuilt from the journal at will
    restore(store, live, snap)
    feed = MarketFeed(market, strategy or _strategy(settings), settings.universe.all_symbols)
    venue = snap["broker"].get("name", "sim") != "sim"  # live traded at a remote venue (Alpaca)
    engine = _engine(settings, store, market, feed, strategy, snap["memory"], venue=venue)
    schedule, gaps = tick_schedule(calls)
    wall: list[float | None] = [None]
    runner = _Runner(engine, store, live, settings, market, feed, strategy, wall, venue=venue)
    runner.resyncs = {r["ts"]: json.loads(r["json"]) for r in live.query(
        "SELECT ts, json FROM session_snapshots WHERE date=? AND ts > ?", (day_s, snap_row["ts"]))}
    for item in schedule:
        runner.run(item)
    store.flush()
    replay_rows = runner.rows(max(c["ts"] for c in calls))
    result = compare(live, replay_rows, snap, calls, gaps, live_bars=live_bars, feed=runner.engine.feed,
                     segments=runner.segments)
    result.gap_ticks = sum(1 for it in schedule if it["kind"] == "gap_tick")
    result.bars_source = bars_source
    result.elapsed_s = time.perf_counter() - t0
    store.close()
    return result


def _strategy(settings: Settings) -> Strategy:
    from core.strategy import load_strategy

    return load_strategy(settings.strategy)


class VenueSim(SimBroker):
    """The simulator answering as a remote venue does (the replay of a session traded at Alpaca): every read of the
    account or positions first matches what the bars say has filled by then, as the venue matches on every request.
    An order that fills at the bar opening at its submission then shows in the account within the tick, as live saw
    it; the plain simulator reports it at the next tick's sync (the research timing, kept for simulated sessions)."""

    def get_positions(self, now: datetime) -> list[BrokerPosition]:
        self.sync(now)
        return super().get_positions(now)

    def get_account(self, now: datetime) -> Account:
        self.sync(now)
        return super().get_account(now)


def _engine(settings: Settings, store: Store, market: MarketData, feed: MarketFeed, strategy: Strategy | None,
            memory: dict[str, Any] | None, fill_cursor: int = 0, *, venue: bool = False) -> Engine:
    broker = VenueSim(store, feed, start_cash=settings.sim_start_cash, slippage_bps=settings.sim_slippage_bps,
                      fee_per_order=settings.sim_fee_per_order, fee_per_share=settings.sim_fee_per_share) \
        if venue else None
    engine = Engine(settings, store, market, feed=feed, strategy=strategy, broker=broker)
    engine.journal.enabled = False  # the scratch database is not a live session
    if memory is not None:  # the live engine's memory at the session's start (what SQLite alone does not hold)
        st = engine.state
        st.scheduler.last_processed.clear()
        st.scheduler.last_processed.update({k: float(v) for k, v in memory["last_processed"].items()})
        st.scheduler.pending_events.update(memory.get("pending_events") or {})
        st.latest_scores.clear()
        st.latest_scores.update({k: (float(v[0]), float(v[1])) for k, v in memory["latest_scores"].items()})
        if memory.get("buckets"):
            st.buckets.restore(memory["buckets"])
        st.last_stop_check = memory.get("last_stop_check")
        st.last_equity_minute = memory.get("last_equity_minute")
        st.fill_cursor = fill_cursor  # the replay's own simulator's fills taken in so far
        engine.reconciliation.done = bool(memory.get("reconciled"))
    return engine


def _write_state(store: Store, snap: dict[str, Any]) -> None:
    """The snapshot's state tables, live intents and orders, and meta keys, into ``store``."""
    for table, rows in snap["tables"].items():
        _insert(store, table, rows)
    _insert(store, "intents", snap["intents"])
    _insert(store, "orders", snap["orders"])
    for k, v in snap["meta"].items():
        if v is not None:
            store.upsert("meta", {"key": k, "value": v})


def restore(store: Store, live: Store, snap: dict[str, Any]) -> None:
    """Write the snapshot's state into the scratch database, and the live history of the hours before it (the
    protections' windows and the scheduler read it)."""
    _write_state(store, snap)
    store.upsert("meta", {"key": "fill_cursor", "value": "0"})
    store.conn.executescript(SIM_SCHEMA)
    b = snap["broker"]
    store.execute("INSERT OR REPLACE INTO sim_account(id, cash) VALUES (1, ?)", (b["cash"],))
    if "sim_orders" in b:  # the simulator's book itself
        _insert(store, "sim_orders", b["sim_orders"])
        _insert(store, "sim_positions", b["sim_positions"])
    else:  # another broker's account: its positions, protected by the engine's stop and take-profit levels
        _insert(store, "sim_positions", [{"symbol": s, "qty": q, "avg_price": p} for s, q, p in b["positions"]])
        _seed_legs(store, snap)
    since = iso(datetime.fromisoformat(snap["ts"]) - timedelta(seconds=HISTORY_LOOKBACK_S))
    for table, col in (("signals", "ts"), ("trades", "exit_ts"), ("equity", "ts"), ("token_stats", "minute"),
                       ("llm_calls", "ts")):
        _insert(store, table, live.query(f"SELECT * FROM {table} WHERE {col} >= ? AND {col} < ?", (since, snap["ts"])))
    _insert(store, "param_audit", live.query("SELECT * FROM param_audit WHERE ts < ?", (snap["ts"],)))
    store.commit()


def reseed(store: Store, snap: dict[str, Any]) -> int:
    """After a disruption live journalled a snapshot: the replay carries on from live's state (what it did during
    the disruption stays in its tables, compared; its open intents and orders end here). Returns the fill cursor."""
    for table in snap["tables"]:
        store.execute(f"DELETE FROM {table}")
    _end_replay_only(store, "intents", "id", "status IN ('pending', 'submitting', 'submitted')",
                     "status='expired', note='replay resynced to live'", [r["id"] for r in snap["intents"]])
    _end_replay_only(store, "orders", "client_order_id",
                     "status IN ('new', 'accepted', 'pending_new', 'partially_filled', 'submitting')",
                     "status='canceled', reason='replay resynced to live'",
                     [r["client_order_id"] for r in snap["orders"]])
    _write_state(store, snap)
    b = snap["broker"]
    store.execute("UPDATE sim_orders SET status='canceled', reason='replay resynced to live' "
                  "WHERE status IN ('new', 'held')")
    store.execute("DELETE FROM sim_positions")
    store.execute("UPDATE sim_account SET cash=? WHERE id=1", (b["cash"],))
    if "sim_orders" in b:
        _insert(store, "sim_orders", b["sim_orders"])
        _insert(store, "sim_positions", b["sim_positions"])
    else:
        _insert(store, "sim_positions", [{"symbol": s, "qty": q, "avg_price": p} for s, q, p in b["positions"]])
        _seed_legs(store, snap)
    cursor = int(store.scalar("SELECT MAX(seq) FROM sim_fills") or 0)
    store.upsert("meta", {"key": "fill_cursor", "value": str(cursor)})
    store.commit()
    store.book.load()  # the book over this connection holds the replay's positions and intents until told
    return cursor


def _end_replay_only(store: Store, table: str, key: str, alive: str, ending: str, keep: list[Any]) -> None:
    marks = ",".join("?" * len(keep))
    store.execute(f"UPDATE {table} SET {ending} WHERE {alive}" + (f" AND {key} NOT IN ({marks})" if keep else ""),
                  keep)


def _seed_legs(store: Store, snap: dict[str, Any]) -> None:
    """Bracket legs for positions held at another broker, from the engine's own stop and take-profit levels: only
    for the engine's own entries (sent as brackets; an adopted position or an order from outside has no legs), named
    as the broker names the legs of that entry (its client id and ``-st`` / ``-ta``), so a leg's fill after a resync
    is the same row in live and in the replay."""
    for p in snap["tables"]["positions"]:
        if not p.get("qty") or not p.get("intent_id") or p.get("kind") == "adopted":
            continue
        cid = client_order_id_for(p["intent_id"])
        t = datetime.fromisoformat(snap["ts"]).timestamp()
        for leg, typ, stop, limit in (("stop_loss", "stop", p.get("stop_price"), None),
                                      ("take_profit", "limit", None, p.get("take_profit_price"))):
            if stop is None and limit is None:
                continue
            # OR REPLACE: the replay's own legs of that entry (ended by the resync) carry the same client ids
            store.execute("INSERT OR REPLACE INTO sim_orders(id, client_order_id, symbol, side, qty, type, stop_price, "
                          "limit_price, status, submitted_at, parent_id, leg, active_from, checked_until) "
                          "VALUES (?,?,?,?,?,?,?,?,'new',?,?,?,?,?)",
                          (f"seed-{cid}-{leg}", f"{cid}-{leg[:2]}", p["symbol"], "sell", p["qty"], typ, stop, limit,
                           t, f"seed-{cid}", leg, t, t - 1))


def _insert(store: Store, table: str, rows: Iterable[dict[str, Any]]) -> None:
    for r in rows:
        cols = list(r)
        store.execute(f"INSERT OR REPLACE INTO {table}({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                      [r[c] for c in cols])


def tick_schedule(calls: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The live calls in order, and ticks at the live cadence inside each gap (where live did not tick)."""
    ticks = [datetime.fromisoformat(c["ts"]) for c in calls if c["kind"] == "tick"]
    steps = [(b - a).total_seconds() for a, b in zip(ticks, ticks[1:], strict=False) if b > a]
    cadence = statistics.median(steps) if steps else 0.0
    out: list[dict[str, Any]] = []
    gaps: list[dict[str, Any]] = []
    prev: dict[str, Any] | None = None
    for c in calls:
        c = {**c, "info": json.loads(c["info"]) if c["info"] else {}}
        if c["kind"] == "tick" and prev is not None and cadence > 0:
            a, b = datetime.fromisoformat(prev["ts"]), datetime.fromisoformat(c["ts"])
            if (b - a).total_seconds() > max(GAP_FACTOR * cadence, 60.0):
                restart = bool(c["info"].get("restart"))
                gaps.append({"start": prev["ts"], "end": c["ts"], "restart": restart,
                             "cause": RESTART if restart else TIMING})
                t = a + timedelta(seconds=cadence)
                while t < b - timedelta(seconds=cadence / 2):
                    w = _between(prev.get("wall"), c.get("wall"), a, b, t)
                    out.append({"kind": "gap_tick", "ts": iso(t), "wall": w, "info": {}})
                    t += timedelta(seconds=cadence)
        out.append(c)
        if c["kind"] == "tick":
            prev = c
    return out, gaps


def _between(wa: float | None, wb: float | None, a: datetime, b: datetime, t: datetime) -> float | None:
    if wa is None or wb is None:
        return None
    return wa + (wb - wa) * (t - a).total_seconds() / max((b - a).total_seconds(), 1e-9)


class _Runner:
    """Calls the replay's engine as live was called, item by item of the schedule."""

    def __init__(self, engine: Engine, store: Store, live: Store, settings: Settings, market: MarketData,
                 feed: MarketFeed, strategy: Strategy | None, wall: list[float | None], *, venue: bool = False) -> None:
        self.engine, self.store, self.live, self.settings = engine, store, live, settings
        self.market, self.feed, self.strategy, self.wall = market, feed, strategy, wall
        self.first = True
        self.venue = venue  # live traded at a remote venue: each engine this replay builds gets a VenueSim
        self.resyncs: dict[str, dict[str, Any]] = {}  # ts -> live's snapshot after a disruption
        # the replay's rows of the segments before the last resync (their tables then hold live's rows, which the
        # protections' windows and the scheduler read), and the segments' bounds
        self.archived: dict[str, list[dict[str, Any]]] = {t: [] for t in _SPECS}
        self.segments: list[tuple[str, str]] = []
        self.seg_start: str | None = None
        self._wire()

    def _wire(self) -> None:
        self.engine.wall = lambda: self.wall[0] if self.wall[0] is not None else 0.0
        self.engine.live.wall_clock = lambda: self.wall[0] or 0.0  # a slider's steps group as they did live

    def run(self, item: dict[str, Any]) -> None:
        now = datetime.fromisoformat(item["ts"])
        self.wall[0] = item.get("wall")
        if self.wall[0] is None:
            self.engine.wall = None
        info = item["info"]
        snap = self.resyncs.get(item["ts"]) if info.get("resync") else None
        if snap is not None and not self.first:
            # after a disruption: on from live's state, with a new engine as live had after a restart
            self._archive(item["ts"])
            cursor = reseed(self.store, snap)
            self.engine = _engine(self.settings, self.store, self.market, self.feed, self.strategy, snap["memory"],
                                  cursor, venue=self.venue)
            self._wire()
        elif info.get("restart") and not self.first:
            # live was restarted here: a new engine from what the database holds, as the live one was
            cursor = int(self.store.scalar("SELECT MAX(seq) FROM sim_fills") or 0)
            self.engine = _engine(self.settings, self.store, self.market, self.feed, self.strategy, None, cursor,
                                  venue=self.venue)
            self._wire()
        if self.first:
            self.seg_start = item["ts"]
        self.first = False
        if self.wall[0] is not None and self.engine.wall is None:
            self._wire()
        for cid in info.get("commands", ()):
            c = self.live.one("SELECT id, created_at, kind, payload, who FROM commands WHERE id=?", (cid,))
            if c is not None:
                self.store.execute("INSERT OR IGNORE INTO commands(id, created_at, kind, payload, who, status) "
                                   "VALUES (?,?,?,?,?, 'new')", (c["id"], c["created_at"], c["kind"], c["payload"],
                                                                c["who"]))
        kind = item["kind"]
        e = self.engine
        if kind in ("tick", "gap_tick"):
            e.tick(now)
        elif kind == "commands":
            e.apply_commands(now)
        elif kind == "stop_check":
            e.check_stops(now)
        elif kind == "protections":
            e.run_protections(now)
        elif kind == "roll_day":
            e.roll_day(now)
        self.store.commit()


    def _archive(self, until: str) -> None:
        """Keep the replay's rows of [segment start, ``until``) for the comparison; put live's in their place."""
        assert self.seg_start is not None
        lo, hi = self.seg_start, _before(until)
        for name, (sql, _, _, tcol, _) in _SPECS.items():
            table = _TABLE.get(name, name)
            self.archived[name].extend(self.store.query(sql, (lo, hi)))
            self.store.execute(f"DELETE FROM {table} WHERE {tcol} >= ? AND {tcol} <= ?", (lo, hi))
            rows = self.live.query(f"SELECT * FROM {table} WHERE {tcol} >= ? AND {tcol} <= ?", (lo, hi))
            if table in _AUTO_ID:
                rows = [{k: v for k, v in r.items() if k != "id"} for r in rows]
            _insert(self.store, table, rows)
        self.store.commit()
        self.segments.append((lo, hi))
        self.seg_start = until

    def rows(self, hi: str) -> dict[str, list[dict[str, Any]]]:
        """Every replay row of the session: the archived segments' and the last segment's."""
        assert self.seg_start is not None
        self.segments.append((self.seg_start, hi))
        return {name: [*self.archived[name], *self.store.query(sql, (self.seg_start, hi))]
                for name, (sql, *_) in _SPECS.items()}


def _before(ts: str) -> str:
    return iso(datetime.fromisoformat(ts) - timedelta(microseconds=1))


# ================================================================ the comparison
# table -> (live query, key columns, compared columns, time column, symbol column)
_SPECS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...], str, str | None]] = {
    "decisions": ("SELECT * FROM signals WHERE ts >= ? AND ts <= ?", ("symbol", "ts"),
                  ("decision", "reason", "action", "score", "price", "cutoff"), "ts", "symbol"),
    "intents": ("SELECT * FROM intents WHERE created_at >= ? AND created_at <= ?", ("id",),
                ("symbol", "side", "kind", "qty", "price", "stop_price", "take_profit_price", "status", "decided_by"),
                "created_at", "symbol"),
    "orders": ("SELECT * FROM orders WHERE submitted_at >= ? AND submitted_at <= ?", ("client_order_id",),
               ("symbol", "side", "qty", "status", "filled_qty", "filled_avg_price"), "submitted_at", "symbol"),
    "fills": ("SELECT * FROM fills WHERE ts >= ? AND ts <= ? ORDER BY ts, id", ("client_order_id", "n"),
              ("symbol", "side", "qty", "price", "ts"), "ts", "symbol"),
    "trades": ("SELECT * FROM trades WHERE exit_ts >= ? AND exit_ts <= ? ORDER BY exit_ts, id", ("symbol", "entry_ts"),
               ("qty", "entry_price", "exit_ts", "exit_price", "pnl", "exit_reason"), "exit_ts", "symbol"),
    "protections": ("SELECT * FROM protections WHERE fired_at >= ? AND fired_at <= ?", ("rule", "fired_at"),
                    ("until", "why"), "fired_at", None),
    "equity": ("SELECT * FROM equity WHERE ts >= ? AND ts <= ?", ("ts",), ("equity", "cash"), "ts", None),
}
_TABLE = {"decisions": "signals"}
_AUTO_ID = ("signals", "trades", "protections")  # integer ids: live's rows get new ones in the replay's tables
_TOL = {"score": 1e-9, "price": 1e-6, "cutoff": 1e-9, "qty": 1e-9, "filled_qty": 1e-9, "filled_avg_price": 1e-6,
        "stop_price": 1e-6, "take_profit_price": 1e-6, "entry_price": 1e-6, "exit_price": 1e-6, "pnl": 1e-4,
        "equity": 5e-3, "cash": 5e-3}


def _rows(table: str, rows: list[dict[str, Any]]) -> dict[tuple[Any, ...], dict[str, Any]]:
    _, key, _, _, _ = _SPECS[table]
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    seen: dict[Any, int] = {}
    for r in rows:
        if table == "fills":  # a partial fill is one of several fills of one order: its place among them
            r["n"] = seen[r["client_order_id"]] = seen.get(r["client_order_id"], -1) + 1
        out[tuple(r[k] for k in key)] = r
    return out


def _same(name: str, a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return abs(float(a) - float(b)) <= _TOL.get(name, 1e-9)
    return a == b


def compare(live: Store, replay: dict[str, list[dict[str, Any]]], snap: dict[str, Any], calls: list[dict[str, Any]],
            gaps: list[dict[str, Any]], *, live_bars: pd.DataFrame | None = None, feed: MarketFeed | None = None,
            segments: list[tuple[str, str]] | None = None) -> SessionReplay:
    """Match live's rows of the session with the replay's, classify each difference, sum up."""
    lo, hi = snap["ts"], max(c["ts"] for c in calls)
    diffs: list[Difference] = []
    matched: dict[str, int] = {}
    for table, (sql, _key, cols, tcol, scol) in _SPECS.items():
        a, b = _rows(table, live.query(sql, (lo, hi))), _rows(table, replay[table])
        matched[table] = 0
        for k in sorted(set(a) | set(b), key=lambda k: ((a.get(k) or b.get(k))[tcol] or "", str(k))):
            ra, rb = a.get(k), b.get(k)
            r = ra or rb
            assert r is not None
            sym = r.get(scol) if scol else None
            keytext = "/".join(str(x) for x in k)
            if ra is None or rb is None:
                fields = {c: [ra.get(c) if ra else None, rb.get(c) if rb else None] for c in cols}
                diffs.append(Difference(table, keytext, "only_replay" if ra is None else "only_live", r[tcol], sym,
                                        fields, live_row=ra, replay_row=rb))
                continue
            changed = {c: [ra.get(c), rb.get(c)] for c in cols if not _same(c, ra.get(c), rb.get(c))}
            if changed:
                diffs.append(Difference(table, keytext, "different", r[tcol], sym, changed, live_row=ra,
                                        replay_row=rb))
            else:
                matched[table] += 1
    diffs.sort(key=lambda d: (d.ts, list(_SPECS).index(d.table), d.key))
    live_fills = live.query("SELECT symbol, side, qty, price, fee, ts, client_order_id FROM fills "
                            "WHERE ts >= ? AND ts <= ? ORDER BY ts, id", (lo, hi))
    ev = _Evidence(live, calls, gaps, live_bars, feed, live_fills=live_fills, replay_fills=replay["fills"],
                   segments=segments or [(lo, hi)])
    live_version, replay_version = snap["version"], code_version()
    classify(diffs, ev, rule_change=live_version != replay_version)
    summary = _summary(live, replay, lo, hi, diffs, matched, snap, feed, segments or [(lo, hi)])
    eq = "SELECT ts, equity FROM equity WHERE ts >= ? AND ts <= ? ORDER BY ts"
    return SessionReplay(
        day=date.fromisoformat(calls[0]["day"]), live_version=live_version, replay_version=replay_version,
        calls=len(calls), gap_ticks=0, differences=diffs, matched=matched, summary=summary,
        equity_live=[[r["ts"], r["equity"]] for r in live.query(eq, (lo, hi))],
        equity_replay=sorted([r["ts"], r["equity"]] for r in replay["equity"]), gaps=gaps)


class _Evidence:
    """What the live journal says happened around a time, an order or a bar, and how much each symbol's difference
    weighs on the account at a time."""

    def __init__(self, live: Store, calls: list[dict[str, Any]], gaps: list[dict[str, Any]],
                 live_bars: pd.DataFrame | None, feed: MarketFeed | None, *,
                 live_fills: list[dict[str, Any]] | None = None, replay_fills: list[dict[str, Any]] | None = None,
                 segments: list[tuple[str, str]] | None = None) -> None:
        self.gaps = gaps
        self.outages: list[tuple[str, str]] = []
        start: str | None = None
        for c in calls:
            failed = c["kind"] == "tick" and c["info"] and "broker_error" in json.loads(c["info"])
            if failed and start is None:
                start = c["ts"]
            elif not failed and start is not None and c["kind"] == "tick":
                self.outages.append((start, c["ts"]))
                start = None
        if start is not None:
            self.outages.append((start, calls[-1]["ts"]))
        self.orders = {r["client_order_id"]: r for r in live.query("SELECT * FROM orders")}
        # a leg's client id is its entry's plus a suffix (core.venues): the entry tells whose it is
        self.live_fills = live_fills or []
        self.replay_fills = replay_fills or []
        self.fill_parts: dict[str, int] = {}  # client id -> live fills of that order (more than one: filled in parts)
        for r in self.live_fills:
            self.fill_parts[r["client_order_id"]] = self.fill_parts.get(r["client_order_id"], 0) + 1
        self.segments = segments or []
        self.feed = feed
        self.changed = _changed_bars(live_bars, feed)  # symbol -> bar open times (epoch s) live saw otherwise

    def in_window(self, ts: str, windows: Iterable[tuple[str, str]]) -> bool:
        return any(a <= ts < b for a, b in windows)

    def order(self, cid: str | None) -> dict[str, Any] | None:
        if cid is None:
            return None
        o = self.orders.get(cid)
        if o is None and len(cid) > 3 and cid[-3] == "-":
            o = self.orders.get(cid[:-3])
        return o

    def bar_changed(self, symbol: str | None, bar_ts: str | None) -> bool:
        """Whether ``symbol``'s bar opening at ``bar_ts`` differs from the one live received (or one of the two
        lacks it)."""
        if symbol is None or bar_ts is None or symbol not in self.changed:
            return False
        return int(datetime.fromisoformat(bar_ts).timestamp()) in self.changed[symbol]

    def weights(self, ts: str) -> dict[str, tuple[float, float]]:
        """Per symbol, (P&L difference, difference in cash and holdings) of the replay against live at ``ts``,
        from the fills since the start of the segment (both sides start a segment with live's book)."""
        seg = next(((a, b) for a, b in self.segments if a <= ts <= b), None)
        if seg is None:
            return {}
        lo = seg[0]
        sides = [_flows(self.live_fills, lo, ts), _flows(self.replay_fills, lo, ts)]
        out: dict[str, tuple[float, float]] = {}
        end = datetime.fromisoformat(ts)
        for sym in set(sides[0]) | set(sides[1]):
            (c0, q0), (c1, q1) = sides[0].get(sym, (0.0, 0.0)), sides[1].get(sym, (0.0, 0.0))
            px = (self.feed.price(sym, end) if self.feed is not None else None) or 0.0
            out[sym] = ((c1 - c0) + (q1 - q0) * px, abs(c1 - c0) + abs((q1 - q0) * px))
        return out


def _flows(fills: list[dict[str, Any]], a: str, b: str) -> dict[str, tuple[float, float]]:
    """Per symbol, (cash flow, shares bought less sold) of the fills with a <= ts <= b."""
    out: dict[str, tuple[float, float]] = {}
    for r in fills:
        if not a <= r["ts"] <= b:
            continue
        sign = -1.0 if r["side"] == "buy" else 1.0
        cash, held = out.get(r["symbol"], (0.0, 0.0))
        out[r["symbol"]] = (cash + sign * r["qty"] * r["price"] - (r.get("fee") or 0.0), held - sign * r["qty"])
    return out


def _bar_seconds(ts: pd.Series) -> np.ndarray:
    return (pd.to_datetime(ts, utc=True).dt.tz_convert("UTC").dt.tz_localize(None)
            .to_numpy(dtype="datetime64[s]").astype(np.int64))


def _changed_bars(bars: pd.DataFrame | None, feed: MarketFeed | None) -> dict[str, set[int]]:
    """The bars live received that the replay's feed holds otherwise: other values, or a minute only one of the two
    has (within the span live received). Compared as they crossed the wire (same rounding on both sides)."""
    if bars is None or bars.empty or feed is None or not len(feed.ts):
        return {}
    out: dict[str, set[int]] = {}
    t_all = _bar_seconds(bars["timestamp"])
    for sym, idx in bars.groupby("symbol", sort=False).indices.items():
        j = feed.col.get(sym)
        if j is None:
            continue
        t = t_all[idx]
        pos = np.minimum(np.searchsorted(feed.ts, t), len(feed.ts) - 1)
        have = feed.ts[pos] == t
        seen = np.column_stack([bars[c].to_numpy(dtype=float)[idx] for c in ("open", "high", "low", "close",
                                                                             "volume")])
        now = np.column_stack([getattr(feed, c)[pos, j] for c in ("open", "high", "low", "close", "volume")])
        differs = ~have | ~np.all(np.isclose(seen, now, rtol=1e-9, atol=1e-9), axis=1)
        lo, hi = np.searchsorted(feed.ts, t.min()), np.searchsorted(feed.ts, t.max(), side="right")
        extra = feed.ts[lo:hi][~np.isnan(feed.close[lo:hi, j])]  # bars the replay has that live never received
        extra = np.setdiff1d(extra, t, assume_unique=False)
        found = {int(x) for x in t[differs]} | {int(x) for x in extra}
        if found:
            out[str(sym)] = found
    return out


def _direct_cause(d: Difference, ev: _Evidence) -> tuple[str | None, str]:
    row = d.live_row or d.replay_row or {}
    for g in ev.gaps:
        if g["start"] < d.ts < g["end"]:
            return g["cause"], f"live did not tick from {g['start']} to {g['end']}" + (
                " (the engine restarted)" if g["restart"] else "")
    if ev.in_window(d.ts, ev.outages):
        return BROKER, "the broker was unreachable: live's ticks failed"
    cid = row.get("client_order_id") if d.table in ("orders", "fills", "intents") else None
    if d.table == "intents" and cid is None:
        cid = client_order_id_for(d.key)
    o = ev.order(cid)
    if d.table in ("orders", "fills") and d.kind == "only_live" and (o is None or o.get("intent_id") is None):
        return OUTSIDE_ORDER, "an order the engine did not send (adopted from the broker)"
    if o is not None:
        if o["status"] == "rejected":
            return BROKER, f"the broker rejected the live order: {o.get('reason') or 'no reason given'}"
        if o.get("filled_qty") is not None and o.get("qty") and 0 < o["filled_qty"] < o["qty"] - 1e-9:
            return BROKER, f"the live order was partly filled ({o['filled_qty']:g} of {o['qty']:g})"
        parts = ev.fill_parts.get(o["client_order_id"], 0)
        if parts > 1:
            return BROKER, f"the broker filled the live order in {parts} parts (a partial fill)"
    if d.table == "fills" and ev.bar_changed(d.symbol, row.get("ts")):
        return DATA, f"the {d.symbol} bar it filled in ({row.get('ts')}) changed after live saw it"
    if d.table in ("orders", "fills") and d.kind == "different":
        price_cols = {"price", "filled_avg_price"}
        if set(d.fields) <= price_cols | {"ts"}:
            return FILL_PRICE, "same order, filled at another price than the fill model's"
    if d.table == "decisions" and ev.bar_changed(d.symbol, row.get("bar_ts")):
        return DATA, f"the {d.symbol} bar of {row.get('bar_ts')} changed after live saw it"
    return None, ""


def classify(diffs: list[Difference], ev: _Evidence, *, rule_change: bool) -> None:
    """Give every difference its cause (see the module docstring), in time order."""
    by_symbol: dict[str, Difference] = {}
    first: Difference | None = None
    for d in diffs:
        cause, why = _direct_cause(d, ev)
        if cause is None and rule_change:
            cause, why = RULE_CHANGE, "the session was traded by another version of the trading code"
        if cause is None:
            origin = by_symbol.get(d.symbol or "") or _account_origin(d, ev, by_symbol) or first
            if origin is not None:
                cause, why = origin.cause, f"follows from {origin.table} {origin.key}"
        d.cause, d.why = cause or UNEXPLAINED, why or CAUSE_WORDS[UNEXPLAINED]
        if d.symbol and d.symbol not in by_symbol:
            by_symbol[d.symbol] = d
        if first is None:
            first = d


def _account_origin(d: Difference, ev: _Evidence, by_symbol: dict[str, Difference]) -> Difference | None:
    """A difference with nothing of its own on its symbol (an equity row, or another symbol sized or refused on a
    different account) follows from the symbol that weighs most on the account then: the largest P&L difference
    for an equity row, the largest difference in cash and holdings otherwise."""
    which = 0 if d.table == "equity" else 1
    weights = {sym: w[which] for sym, w in ev.weights(d.ts).items() if sym in by_symbol}
    best = max(weights, key=lambda sym: (abs(weights[sym]), sym), default=None)
    if best is None or abs(weights[best]) <= _TOL["equity"]:
        return None
    return by_symbol[best]


def _summary(live: Store, replay: dict[str, list[dict[str, Any]]], lo: str, hi: str, diffs: list[Difference],
             matched: dict[str, int], snap: dict[str, Any], feed: MarketFeed | None,
             segments: list[tuple[str, str]]) -> dict[str, Any]:
    """Counts by kind and cause, and the P&L difference split by cause: per segment (between two resyncs to live)
    and symbol, the fills' cash flows plus what is still held at the segment's end at one price for both, given to
    the cause of the symbol's first difference in the segment."""
    live_fills = live.query("SELECT symbol, side, qty, price, fee, ts FROM fills WHERE ts >= ? AND ts <= ?", (lo, hi))

    def pnl(fills: list[dict[str, Any]], a: str, b: str) -> dict[str, float]:
        end = datetime.fromisoformat(b)
        return {sym: cash + q * ((feed.price(sym, end) if feed is not None and q else None) or 0.0)
                for sym, (cash, q) in _flows(fills, a, b).items()}

    by_cause: dict[str, float] = {}
    total = 0.0
    for a, b in segments:
        pl, pr = pnl(live_fills, a, b), pnl(replay["fills"], a, b)
        first_cause: dict[str, str] = {}
        for d in diffs:
            if a <= d.ts <= b and d.symbol and d.symbol not in first_cause:
                first_cause[d.symbol] = d.cause
        for sym in sorted(set(pl) | set(pr)):
            delta = pr.get(sym, 0.0) - pl.get(sym, 0.0)
            if abs(delta) > _TOL["equity"]:  # less than half a cent: the wire's rounding of prices, not a trade
                c = first_cause.get(sym, UNEXPLAINED)
                by_cause[c] = round(by_cause.get(c, 0.0) + delta, 4)
                total += delta
    by_cause = {c: v for c, v in by_cause.items() if v != 0.0}
    el = live.scalar("SELECT equity FROM equity WHERE ts >= ? AND ts <= ? ORDER BY ts DESC LIMIT 1", (lo, hi))
    pnl_live = None if el is None else round(el - snap["broker"]["equity"], 4)
    kinds = {k: sum(1 for d in diffs if d.kind == k) for k in KINDS[1:]}
    causes = {c: n for c in (*CAUSES, UNEXPLAINED) if (n := sum(1 for d in diffs if d.cause == c))}
    return {
        "differences": len(diffs), "matched": sum(matched.values()), "by_kind": kinds, "by_cause": causes,
        "segments": len(segments), "pnl_live": pnl_live,
        "pnl_replay": None if pnl_live is None else round(pnl_live + total, 4),
        "pnl_difference": round(total, 4), "pnl_difference_by_cause": by_cause,
    }


# ================================================================ keeping it
def save_session_run(store: Store, result: SessionReplay, *, name: str, created_at: datetime) -> int:
    """Keep the replay in ``research_runs`` (kind ``session_replay``) like any other run."""
    from core.research import runs

    return runs.save_run(
        store, name=name, kind="session_replay", source={"kind": "live_session", "day": result.day.isoformat()},
        params={"live_version": result.live_version, "replay_version": result.replay_version},
        metrics={"differences": result.summary["differences"], "matched": result.summary["matched"],
                 "pnl_difference": result.summary["pnl_difference"]},
        created_at=created_at, equity=[[t, v] for t, v in result.equity_replay],
        detail=result.to_dict())

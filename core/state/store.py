"""SQLite schema and queries: the single source of truth for the UI.

One connection per process side (the engine owns one; every UI session opens its
own read connection). WAL so readers never block the writer; a busy timeout so
short write overlaps wait instead of failing. Tables are created with
sqlite-utils; hot paths use plain SQL on the same connection.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import sqlite_utils

SCHEMA_VERSION = 1

# table -> (columns, primary key, indexes)
_TABLES: dict[str, tuple[dict[str, type], str | tuple[str, ...] | None, list[tuple[str, ...]]]] = {
    "meta": ({"key": str, "value": str}, "key", []),
    "kv": ({"key": str, "value": str, "expires_at": float}, "key", []),
    "counters": ({"key": str, "value": int}, "key", []),
    "params": ({"id": int, "json": str, "updated_at": str}, "id", []),
    "param_audit": (
        {"id": int, "ts": str, "who": str, "name": str, "old": str, "new": str, "source": str}, "id", [("ts",)]),
    "commands": (
        {"id": int, "created_at": str, "kind": str, "payload": str, "who": str, "status": str,
         "applied_at": str, "result": str}, "id", [("status",)]),
    "signals": (
        {"id": int, "ts": str, "bar_ts": str, "symbol": str, "tier": str, "score": float, "raw_score": float,
         "vol_spike": float, "cutoff": float, "decision": str, "reason": str, "action": str, "price": float},
        "id", [("ts",), ("decision",)]),
    # research runs' summary form of the decisions that never passed the cutoff (core.state.decisions)
    "signal_counts": (
        {"symbol": str, "minute": str, "decision": str, "reason": str, "tier": str, "n": int, "first_ts": str,
         "last_ts": str, "bar_ts": str, "price": float, "last_score": float},
        ("symbol", "minute", "decision", "reason"), [("minute",)]),
    "basket_state": (
        {"name": str, "ts": str, "n_signals": int, "negative_ratio": float, "mean_score": float,
         "condition": int, "consecutive": int, "last_intent_id": str, "members_json": str, "blocked_by": str},
        "name", []),
    "intents": (
        {"id": str, "created_at": str, "symbol": str, "side": str, "qty": float, "price": float, "notional": float,
         "kind": str, "reason": str, "source": str, "status": str, "expires_at": str, "decided_at": str,
         "decided_by": str, "client_order_id": str, "stop_price": float, "take_profit_price": float,
         "risk_after": float, "note": str, "approve_by": float, "sent_price": float},
        "id", [("status",), ("created_at",)]),
    "orders": (
        {"client_order_id": str, "broker_order_id": str, "intent_id": str, "symbol": str, "side": str, "qty": float,
         "type": str, "status": str, "submitted_at": str, "updated_at": str, "filled_qty": float,
         "filled_avg_price": float, "reason": str},
        "client_order_id", [("status",), ("submitted_at",)]),
    "fills": (
        {"id": str, "client_order_id": str, "symbol": str, "side": str, "qty": float, "price": float,
         "fee": float, "ts": str},
        "id", [("ts",)]),
    "positions": (
        {"symbol": str, "qty": float, "avg_price": float, "opened_at": str, "stop_price": float,
         "take_profit_price": float, "kind": str, "high": float, "low": float, "intent_id": str, "fees": float},
        "symbol", []),
    "trades": (
        {"id": int, "symbol": str, "kind": str, "qty": float, "entry_ts": str, "entry_price": float,
         "exit_ts": str, "exit_price": float, "pnl": float, "ret": float, "exit_reason": str, "mae": float,
         "mfe": float, "fees": float},
        "id", [("exit_ts",)]),
    "equity": ({"ts": str, "equity": float, "cash": float, "exposure": float}, "ts", []),
    "day_state": ({"date": str, "start_equity": float, "created_at": str}, "date", []),
    "token_stats": (
        {"minute": str, "tier": str, "requested": int, "granted": int, "borrowed": int}, ("minute", "tier"), []),
    "heartbeat": ({"name": str, "ts": str, "info": str}, "name", []),
    "kpi_snapshots": ({"ts": str, "json": str}, "ts", []),
    "notifications": ({"id": int, "ts": str, "level": str, "text": str}, "id", [("ts",)]),
    # EDGAR filings and volume-spike events (rules §6): one row per event id, never processed twice
    "events": (
        {"id": str, "symbol": str, "kind": str, "form": str, "filed_at": str, "title": str, "url": str, "text": str,
         "created_at": str, "processed_at": str},
        "id", [("symbol",), ("created_at",)]),
    # every LLM request the gate let through or refused on budget/limit, with its outcome (rules §6)
    "llm_calls": (
        {"id": int, "ts": str, "day": str, "month": str, "symbol": str, "event_id": str, "kind": str,
         "vol_spike": float, "score": float,
         "status": str, "called": int, "prompt_tokens": int, "completion_tokens": int, "cost": float,
         "latency_ms": float, "sentiment": float, "confidence": float, "rationale": str, "error": str,
         "done_at": str},
        "id", [("ts",), ("status",), ("day",)]),
    "protections": (
        {"id": int, "rule": str, "fired_at": str, "until": str, "pause_until": str, "why": str,
         "figures_json": str, "old_json": str, "new_json": str, "released_at": str, "released_by": str},
        "id", [("rule",), ("fired_at",)]),
    # the session journal (core.engine.journal): each outside call into the live engine, and each session's start
    "engine_calls": ({"id": int, "ts": str, "day": str, "wall": float, "kind": str, "info": str}, "id", [("day",)]),
    # kind: start (a session's first call), restart, broker (the first good tick after failed ones), pause
    "session_snapshots": ({"date": str, "ts": str, "kind": str, "version": str, "json": str}, ("date", "ts"), []),
    # research runs a trader chose to keep (core.research.runs): the settings, data, metrics and curves of a
    # replay, sweep or walk-forward, each JSON part a standard JSON document (no NaN/Infinity)
    "research_runs": (
        {"id": int, "created_at": str, "name": str, "kind": str, "source": str, "params": str, "metrics": str,
         "benchmark": str, "equity": str, "trades": str, "detail": str},
        "id", [("created_at",)]),
}


_UPSERT_SQL: dict[tuple[str, tuple[str, ...]], str] = {}  # (table, columns) -> statement, built once
_iso_memo: dict[int, tuple[datetime, str]] = {}  # see ``iso``


def _upsert_sql(table: str, cols: tuple[str, ...]) -> str:
    sql = _UPSERT_SQL.get((table, cols))
    if sql is None:
        pk = _TABLES[table][1]
        pks = [pk] if isinstance(pk, str) else list(pk or ())
        updates = ", ".join(f"{c}=excluded.{c}" for c in cols if c not in pks) or f"{pks[0]}=excluded.{pks[0]}"
        sql = _UPSERT_SQL[(table, cols)] = (
            f"INSERT INTO {table}({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)}) "
            f"ON CONFLICT({', '.join(pks)}) DO UPDATE SET {updates}")
    return sql


def iso(ts: datetime | None) -> str | None:
    if ts is None:
        return None
    # a tick formats the same few objects (its ``now``, the bar's) for every row: remembered by identity (equal
    # datetimes in other time zones format differently), holding the object so its id stays its own
    hit = _iso_memo.get(id(ts))
    if hit is not None and hit[0] is ts:
        return hit[1]
    if len(_iso_memo) >= 64:
        _iso_memo.clear()
    s = ts.isoformat()
    _iso_memo[id(ts)] = (ts, s)
    return s


class Store:
    """The engine's SQLite database."""

    # what ``book`` builds over a store: core.state.book's Book, set by the package (core/state/__init__.py) so the
    # store never imports the book that writes through it
    book_type: ClassVar[Callable[[Store], Any] | None] = None

    def __init__(self, path: str | Path, *, readonly: bool = False) -> None:
        self.path = str(path)
        self._book: Any = None
        # replays write their journal in batches: commit points wait for ``flush`` (nothing leaves the process)
        self.batched = False
        self._latest: dict[tuple[str, Any], dict[str, Any]] = {}  # see ``put``
        self._tick_depth = 0  # see ``tick_scope``
        self._tick_thread: int | None = None
        self._flush_hooks: list[Any] = []  # journal parts buffered in memory (core.state.decisions), see ``on_flush``
        self._rollback_hooks: list[Any] = []
        self._watchers: dict[str, list[Callable[[Sequence[str], Sequence[Sequence[Any]]], None]]] = {}  # ``watch``
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        uri = f"file:{self.path}?mode=ro" if readonly else self.path
        # The engine's jobs run on APScheduler worker threads; the Engine serialises them with its own lock.
        self.conn = sqlite3.connect(uri, uri=readonly, check_same_thread=False, timeout=10.0)
        self.conn.row_factory = sqlite3.Row
        self.lock = threading.RLock()
        self.conn.execute("PRAGMA busy_timeout=10000")
        if not readonly:
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.db = sqlite_utils.Database(self.conn)
            self.ensure_schema()
        else:
            self.db = sqlite_utils.Database(self.conn)

    @property
    def book(self) -> Any:
        """The engine's in-memory book over this connection (core.state.book), built on first use."""
        if self._book is None:
            if self.book_type is None:
                raise RuntimeError("Store.book_type is not set: core/state/__init__.py sets it to core.state.book.Book")
            self._book = self.book_type(self)
        return self._book

    # ---------------------------------------------------------------- schema
    def ensure_schema(self) -> None:
        # a deleted saved run's id is never handed out again (a page still showing it must not open another run)
        self.conn.execute("CREATE TABLE IF NOT EXISTS research_runs (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                          "created_at TEXT, name TEXT, kind TEXT, source TEXT, params TEXT, metrics TEXT, "
                          "benchmark TEXT, equity TEXT, trades TEXT, detail TEXT)")
        self.conn.execute("CREATE INDEX IF NOT EXISTS research_runs_created ON research_runs(created_at)")
        for name, (cols, pk, indexes) in _TABLES.items():
            table = self.db[name]
            if not table.exists():
                table.create(cols, pk=pk, not_null=None)
                for idx in indexes:
                    table.create_index(list(idx), if_not_exists=True)
            else:  # columns added after a table was first created (intents.approve_by, ...): NULL in old rows
                self._add_missing_columns(name, cols)
        # One decision per symbol per tick: a tick re-run after a crash inserts nothing twice.
        self.conn.execute("CREATE UNIQUE INDEX IF NOT EXISTS signals_symbol_ts ON signals(symbol, ts)")
        # the per-tick "is an order of this intent still open" look-ups: without these they scan every
        # order ever placed, and a year's replay slows down quadratically
        self.conn.execute("CREATE INDEX IF NOT EXISTS orders_intent ON orders(intent_id, status)")
        self.conn.execute("CREATE INDEX IF NOT EXISTS intents_symbol_status ON intents(symbol, status)")
        # the protections' "actionable signals in the last hour", run after every fill
        self.conn.execute("CREATE INDEX IF NOT EXISTS signals_decision_ts ON signals(decision, ts)")
        # asked inside a tick, so they must not read a year of history (tests/test_big_history.py): the LLM
        # gate's newest answer for a symbol and its month's spend (core.services.llm)
        self.conn.execute("CREATE INDEX IF NOT EXISTS llm_calls_answers ON llm_calls(status, symbol, done_at)")
        self.conn.execute("CREATE INDEX IF NOT EXISTS llm_calls_month ON llm_calls(month, cost)")
        # pages: an event's newest LLM call (Live signals), the newest decided intents (Approvals)
        self.conn.execute("CREATE INDEX IF NOT EXISTS llm_calls_event ON llm_calls(event_id)")
        self.conn.execute("CREATE INDEX IF NOT EXISTS intents_recent ON intents(COALESCE(decided_at, created_at))")
        self.conn.execute(
            "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
        )
        self.conn.commit()

    def _add_missing_columns(self, table: str, cols: dict[str, type]) -> None:
        """A database made by an older version lacks the columns added since (e.g. ``param_audit.source``): add
        them (empty in the old rows), or every insert naming them would fail."""
        have = {r[1] for r in self.conn.execute(f"PRAGMA table_info({table})")}
        for col, kind in cols.items():
            if col not in have:
                self.db[table].add_column(col, kind)

    def close(self) -> None:
        """Commit what is pending, the buffered parts of the journal with it (a replay closed between two
        flushes keeps its rows and its cursor together), and close."""
        try:
            self._write_buffered()
            self.conn.commit()
        finally:
            self.conn.close()

    # ---------------------------------------------------------------- helpers
    def commit(self) -> None:
        """The end of a unit of work. Inside a live tick (``tick_scope``, on the ticking thread) it waits for the
        tick's end or a ``barrier``; in batch mode (a replay on the in-process simulated broker) for the batch's
        ``flush``; elsewhere it commits now."""
        if self.batched or (self._tick_depth and threading.get_ident() == self._tick_thread):
            return
        self._write_buffered()
        self.conn.commit()

    def barrier(self) -> None:
        """Before anything leaves the process (an order, a cancel, a message): what the tick decided so far is
        committed now, so a crash after the call finds its reason on disk. A replay's batch has nothing that
        leaves the process (its broker is the in-process simulator) and waits for its flush."""
        if self.batched:
            return
        self._write_buffered()
        self.conn.commit()

    @contextmanager
    def tick_scope(self) -> Iterator[None]:
        """One live tick as one transaction: its commit points wait for the tick's end (the caller commits when
        the scope ends) or for a ``barrier``."""
        outer = self._tick_depth == 0
        if outer:
            self._tick_thread = threading.get_ident()
        self._tick_depth += 1
        try:
            yield
        finally:
            self._tick_depth -= 1
            if outer:
                self._tick_thread = None

    def flush(self) -> None:
        """Commit now, batch or not: a replay's batch boundary, the end of a run."""
        self._write_buffered()
        self.conn.commit()

    def _write_buffered(self) -> None:
        for write in self._flush_hooks:
            write()
        self._write_latest()

    def on_flush(self, write: Any) -> None:
        """``write()`` puts a buffered part of the journal on the connection at every ``flush``."""
        self._flush_hooks.append(write)

    def on_rollback(self, drop: Any) -> None:
        """``drop()`` forgets that part's buffer when the transaction is rolled back."""
        self._rollback_hooks.append(drop)

    def watch(self, table: str, seen: Callable[[Sequence[str], Sequence[Sequence[Any]]], None]) -> None:
        """``seen(columns, rows)`` after every write of rows to ``table`` through ``insert``, ``insert_many``,
        ``upsert`` and ``upsert_many`` (and the decision log's actionable rows, ``wrote``): the engine's in-memory
        windows of its own journal (core.state.protections) follow what it writes. Raw ``execute`` is not seen."""
        self._watchers.setdefault(table, []).append(seen)

    def wrote(self, table: str, cols: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Tell ``table``'s watchers about rows just written."""
        for seen in self._watchers.get(table, ()):
            seen(cols, rows)

    def put(self, table: str, row: dict[str, Any]) -> None:
        """An upsert of a row whose latest value is all that matters (meta, heartbeat, basket state). In batch
        mode only the last value per key is written, at the flush, instead of once per tick."""
        if not self.batched:
            self.upsert(table, row)
            return
        pk = _TABLES[table][1]
        key = (table, row[pk] if isinstance(pk, str) else tuple(row[c] for c in pk or ()))
        self._latest[key] = {**self._latest.get(key, {}), **row}  # as successive upserts of these columns

    def _write_latest(self) -> None:
        for (table, _), row in self._latest.items():
            self.upsert(table, row)
        self._latest.clear()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self.lock:
            try:
                yield self.conn
                self.commit()
            except BaseException:
                self.rollback()
                raise

    def rollback(self) -> None:
        """Drop everything not yet committed, the latest-value rows waiting for the flush included."""
        self._latest.clear()
        self.conn.rollback()
        for drop in self._rollback_hooks:  # after the rollback: a part may reload what is committed
            drop()

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, params)

    def query(self, sql: str, params: Any = ()) -> list[dict[str, Any]]:
        return [dict(r) for r in self.conn.execute(sql, params).fetchall()]

    def one(self, sql: str, params: Any = ()) -> dict[str, Any] | None:
        row = self.conn.execute(sql, params).fetchone()
        return None if row is None else dict(row)

    def scalar(self, sql: str, params: Any = ()) -> Any:
        row = self.conn.execute(sql, params).fetchone()
        return None if row is None else row[0]

    def upsert(self, table: str, row: dict[str, Any]) -> None:
        cols, values = tuple(row), list(row.values())
        self.conn.execute(_upsert_sql(table, cols), values)
        if table in self._watchers:
            self.wrote(table, cols, (values,))

    def upsert_many(self, table: str, cols: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
        """``upsert`` of many rows of the same columns, in order (a later row of a key wins, as with one by one)."""
        if rows:
            self.conn.executemany(_upsert_sql(table, cols), rows)
            if table in self._watchers:
                self.wrote(table, cols, rows)

    def insert(self, table: str, row: dict[str, Any], *, ignore: bool = False) -> int:
        cols = list(row)
        verb = "INSERT OR IGNORE" if ignore else "INSERT"
        values = [row[c] for c in cols]
        cur = self.conn.execute(
            f"{verb} INTO {table}({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})", values)
        if cur.rowcount > 0 and table in self._watchers:
            self.wrote(table, cols, (values,))
        return cur.rowcount

    def insert_many(self, table: str, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        cols = list(rows[0])
        values = [[r[c] for c in cols] for r in rows]
        self.conn.executemany(f"INSERT INTO {table}({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})",
                              values)
        if table in self._watchers:
            self.wrote(table, cols, values)

    # ---------------------------------------------------------------- meta / counters
    def get_meta(self, key: str) -> str | None:
        pending = self._latest.get(("meta", key))
        if pending is not None:
            return pending["value"]
        return self.scalar("SELECT value FROM meta WHERE key=?", (key,))

    def set_meta(self, key: str, value: str) -> None:
        self.put("meta", {"key": key, "value": value})

    def counter(self, key: str) -> int:
        return int(self.scalar("SELECT value FROM counters WHERE key=?", (key,)) or 0)

    def incr(self, key: str, by: int = 1) -> int:
        self.conn.execute(
            "INSERT INTO counters(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=value+excluded.value",
            (key, by),
        )
        return self.counter(key)

    # ---------------------------------------------------------------- commands (UI -> engine)
    def send_command(self, kind: str, payload: dict[str, Any], *, who: str, now: datetime) -> int:
        """Write a command the engine applies on its next tick. Safe from any process."""
        with self.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO commands(created_at, kind, payload, who, status) VALUES (?,?,?,?, 'new')",
                (iso(now), kind, json.dumps(payload, sort_keys=True), who),
            )
            return int(cur.lastrowid or 0)

    def pending_commands(self) -> list[dict[str, Any]]:
        """The commands not applied yet, oldest first, their payloads as written (text: the engine checks each)."""
        return self.query("SELECT * FROM commands WHERE status='new' ORDER BY id")

    def finish_command(self, cid: int, status: str, result: str, now: datetime) -> None:
        self.conn.execute(
            "UPDATE commands SET status=?, result=?, applied_at=? WHERE id=?", (status, result, iso(now), cid)
        )

    # ---------------------------------------------------------------- notifications
    def notify(self, level: str, text: str, now: datetime) -> None:
        self.conn.execute("INSERT INTO notifications(ts, level, text) VALUES (?,?,?)", (iso(now), level, text))

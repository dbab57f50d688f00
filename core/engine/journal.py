"""The session journal (issue 28): what a session replay needs to run the live day again, written by the live engine.

* ``engine_calls``: one row per call into the engine from outside (a tick, commands applied between ticks, a stop
  check, a protections run, the day roll), with its market time, the wall time the approval windows ran on, and what
  happened in it that a replay must know (the commands it applied, a restart's reconciliation, a broker failure).
  The replay calls the same entry points at the same times, so the live timing (late or skipped ticks) is its input.
* ``session_snapshots``: at the first call of each New York trading date, the engine's state before that call changes
  anything (book, open intents and orders, TTL keys, cap counts, protections, parameters, token levels, the
  scheduler's memory, the broker's account) and the version of the rules and engine code that traded; again after
  each disruption (a restart, ticks the broker failed, a pause of more than ``RESYNC_AFTER_S``), so a replay that
  ticked through the disruption can carry on from live's state and count the disruption once.

Both are written inside the call's transaction, so they are committed before anything leaves the process. A replay
(``store.batched``) and a session replay's own engine (``enabled`` False) write neither.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from core.clock import trading_date
from core.config import secret_fields
from core.state.book import LIVE_INTENT_STATUSES, OPEN_ORDER_STATUSES
from core.state.store import Store, iso

_ROOT = Path(__file__).resolve().parents[1]
# what decides a trade: the rules, the engine, the strategy and the feed that scores the bars
_VERSIONED = ("rules", "engine", "strategy.py", "feed.py")
STATE_TABLES = ("kv", "counters", "params", "positions", "day_state", "basket_state", "protections")
STATE_META = ("fill_cursor", "token_buckets", "tick_cadence")
RESYNC_AFTER_S = 120.0  # market seconds between two ticks of one process that make a pause


@lru_cache(maxsize=1)
def code_version() -> str:
    """A short hash of the sources that decide trades (``core/rules``, ``core/engine``, strategy, feed): two runs
    with the same version ran the same trading code."""
    h = hashlib.sha256()
    for name in _VERSIONED:
        path = _ROOT / name
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for f in files:
            h.update(str(f.relative_to(_ROOT)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:12]


def settings_record(settings: Any) -> dict[str, Any]:
    """The settings that traded, without secrets (a replay runs with them)."""
    secret = secret_fields()
    return {k: v for k, v in settings.model_dump(mode="json").items() if k not in secret}


class SessionJournal:
    """Records the engine's outside calls and each session's starting state (see the module docstring)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.enabled = True
        self.call_id: int | None = None  # the row of the call in progress (commands add their ids to it)
        self._snap_day: str | None = None  # the date whose snapshot is known to be on disk
        self._last_tick: datetime | None = None  # this process's previous tick
        self._failed = False  # the previous tick failed at the broker
        store.on_rollback(self._forget)

    def _forget(self) -> None:
        self._snap_day = None  # the snapshot may have been rolled back with its call
        self.call_id = None

    def begin(self, engine: Any, kind: str, now: datetime, **info: Any) -> None:
        """A call into ``engine`` from outside starts at ``now``: the session's snapshot first if this is its first
        call (or the first after a disruption), then the call's row. (``engine`` is core.engine.tick.Engine, typed
        Any: tick imports this module.)"""
        if not self.enabled or self.store.batched:
            self.call_id = None
            return
        day = trading_date(now).isoformat()
        kind_of_snap = None
        if self._snap_day != day:
            if self.store.scalar("SELECT 1 FROM session_snapshots WHERE date=?", (day,)) is None:
                kind_of_snap = "start"
            self._snap_day = day
        if kind == "tick" and "broker_error" not in info:
            if kind_of_snap is None:
                if info.get("restart"):
                    kind_of_snap = "restart"
                elif self._failed:
                    kind_of_snap = "broker"
                elif self._last_tick is not None and (now - self._last_tick).total_seconds() > RESYNC_AFTER_S \
                        and trading_date(self._last_tick) == trading_date(now):
                    kind_of_snap = "pause"
            self._failed = False
        if kind == "tick":
            self._last_tick = now
            if "broker_error" in info:
                self._failed = True
        if kind_of_snap is not None:
            snap = snapshot(engine, now)
            row = {"date": day, "ts": iso(now), "kind": kind_of_snap, "version": snap["version"],
                   "json": json.dumps(snap, sort_keys=True)}
            self.store.insert("session_snapshots", row, ignore=True)
            if kind_of_snap != "start":
                info = {**info, "resync": kind_of_snap}
        wall = engine.wall() if engine.wall is not None else None
        cur = self.store.execute("INSERT INTO engine_calls(ts, day, wall, kind, info) VALUES (?,?,?,?,?)",
                                 (iso(now), day, wall, kind, json.dumps(info, sort_keys=True) if info else None))
        self.call_id = int(cur.lastrowid or 0)

    def note(self, **info: Any) -> None:
        """Add to the current call's row (the ids of the commands it applied)."""
        if self.call_id is None:
            return
        row = self.store.scalar("SELECT info FROM engine_calls WHERE id=?", (self.call_id,))
        merged = {**(json.loads(row) if row else {}), **info}
        self.store.execute("UPDATE engine_calls SET info=? WHERE id=?", (json.dumps(merged, sort_keys=True),
                                                                        self.call_id))


def snapshot(engine: Any, now: datetime) -> dict[str, Any]:
    """The engine's state at ``now``, before the call that starts there changes anything: enough for a fresh engine
    on an empty database to carry on exactly as this one will."""
    st = engine.store
    # the protections' firings from the engine's copy in memory (written through): no scan of the table in a live job
    tables = {t: st.query(f"SELECT * FROM {t}") for t in STATE_TABLES if t != "protections"}
    tables["protections"] = engine.state.protections.all_rows()
    live = tuple(LIVE_INTENT_STATUSES)
    intents = st.query(f"SELECT * FROM intents WHERE status IN ({','.join('?' * len(live))})", live)
    ids = tuple(r["id"] for r in intents)
    orders = st.query(f"SELECT * FROM orders WHERE status IN ({','.join('?' * len(OPEN_ORDER_STATUSES))})"
                      + (f" OR intent_id IN ({','.join('?' * len(ids))})" if ids else ""),
                      (*OPEN_ORDER_STATUSES, *ids))
    meta = {k: st.get_meta(k) for k in STATE_META}
    state = engine.state
    broker: dict[str, Any] = {"name": engine.broker.name}
    acct = engine.broker.get_account(now)
    broker.update(cash=acct.cash, equity=acct.equity,
                  positions=[[p.symbol, p.qty, p.avg_entry_price] for p in engine.broker.get_positions(now)])
    if engine.broker.name == "sim":  # the simulator's own book, as it is: open orders with their legs
        broker["sim_orders"] = st.query("SELECT * FROM sim_orders WHERE status IN ('new', 'held')")
        broker["sim_positions"] = st.query("SELECT * FROM sim_positions")
    return {
        "ts": iso(now), "version": code_version(), "settings": settings_record(engine.s),
        "tables": tables, "intents": intents, "orders": orders, "meta": meta, "broker": broker,
        "memory": {
            "last_processed": dict(state.scheduler.last_processed),
            "pending_events": dict(state.scheduler.pending_events),
            "latest_scores": {k: list(v) for k, v in state.latest_scores.items()},
            "buckets": state.buckets.dump() if hasattr(state.buckets, "dump") else None,
            "last_stop_check": state.last_stop_check, "last_equity_minute": state.last_equity_minute,
            "fill_cursor": state.fill_cursor, "reconciled": engine.reconciliation.done,
        },
    }

"""The engine: one ``tick(now)`` is the whole cycle, for live and replay alike.

    commands -> day roll -> broker sync (fills, orders) -> expire intents ->
    tier scheduler + token buckets -> scores -> gates -> long/exit intents ->
    basket router -> risk -> approval queue or submit -> stop checks -> snapshots

Time only ever comes from the ``now`` argument. Every decision is written to
SQLite; commands from the UI arrive through the ``commands`` table.

This module holds what the tick is made of: construction, ``tick()`` with its one transaction and what happens
when the broker or the database fails, the order of the steps (``_tick_body``), the UI's commands and the day
roll. Each step lives in its own module of this package, as a part ``Engine`` is built from:
``memory`` (state and its restore), ``params``, ``decide`` (the decision chain), ``ledger`` (fills, stops),
``routing`` (baskets), ``orders`` (order flow), ``reconcile`` and ``snapshots``.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from core.clock import ensure_utc, is_rth, trading_date
from core.config import ConfigError, Settings
from core.engine.closing import PositionClosing
from core.engine.decide import DecisionChain
from core.engine.ledger import FillLedger
from core.engine.memory import MemoryState
from core.engine.orders import OrderFlow
from core.engine.params import COMMAND_SOURCES, LiveParameters
from core.engine.reconcile import Reconciliation
from core.engine.routing import BasketRouting
from core.engine.snapshots import Snapshots
from core.feed import MarketFeed
from core.rules import gates
from core.rules.baskets import BasketRouter
from core.rules.protections import Protections
from core.rules.ratelimit import LocalTokenBuckets
from core.rules.risk import AccountState, RiskManager
from core.rules.scheduler import TierScheduler
from core.services.llm import LLMGate
from core.services.redis_stream import SignalStream
from core.state.decisions import FULL, DecisionLog
from core.state.kv import KVStore, SqliteKV
from core.state.store import Store
from core.strategy import Strategy, load_strategy
from core.venues.broker import Broker, BrokerError
from core.venues.marketdata import MarketData
from core.venues.sim.broker import SimBroker

log = logging.getLogger(__name__)


@dataclass
class TickReport:
    now: datetime
    processed: int = 0
    actionable: int = 0
    suppressed: dict[str, int] = field(default_factory=dict)
    intents: list[str] = field(default_factory=list)
    fills: int = 0
    commands: int = 0
    broker_error: str | None = None
    storage_error: str | None = None  # the database refused a write: the tick traded nothing


class Engine(MemoryState, LiveParameters, DecisionChain, BasketRouting, OrderFlow, FillLedger, Reconciliation,
             Snapshots, PositionClosing):
    """One account's engine: ``tick(now)`` runs the whole cycle; the parts it is built from are listed in this
    module's docstring. ``lock`` serialises ticks, commands and approvals."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        market: MarketData,
        *,
        broker: Broker | None = None,
        strategy: Strategy | None = None,
        kv: KVStore | None = None,
        buckets: LocalTokenBuckets | None = None,
        feed: MarketFeed | None = None,
        stream: SignalStream | None = None,
        decisions: str = FULL,
        wall: Callable[[], float] | None = None,
    ) -> None:
        self.s = settings
        # The live app's wall clock (POSIX seconds): a manual intent's approval window counts its seconds, because
        # a human has those, not market seconds (SIM_SPEED). None (replays): every window is market time.
        self.wall = wall
        self.store = store
        self.decisions = DecisionLog(store, decisions)  # live: every row; research: bulk rows as counts
        self.universe = settings.universe
        self.strategy = strategy or load_strategy(settings.strategy)
        # a sweep passes one scored feed to every cell (read-only during a replay)
        self.feed = feed or MarketFeed(market, self.strategy, self.universe.all_symbols)
        self.kv: KVStore = kv or SqliteKV(store)
        self.buckets = buckets or LocalTokenBuckets(
            {"A": settings.tier_a_tokens, "B": settings.tier_b_tokens, "Reserve": settings.reserve_tokens},
            borrow_window_s=settings.reserve_borrow_window_s,
        )
        self.scheduler = TierScheduler(self.universe, self.buckets)
        self.broker: Broker = broker or SimBroker(
            store, self.feed, start_cash=settings.sim_start_cash, slippage_bps=settings.sim_slippage_bps,
            fee_per_order=settings.sim_fee_per_order,
        )
        self.stream = stream  # Redis ``signals.raw`` (issue 8); None: decide in-process
        self._published: list[dict[str, Any]] = []  # this tick's messages, until read back
        self.risk = RiskManager(settings)
        # rules §6: the gate reads the live LLM_MIN_SIGNAL_SCORE (0.7; relaxed 0.6; rollback 0.65)
        self.llm = LLMGate(settings, store, lambda: self.params.llm_min_signal_score) if settings.llm_enabled else None
        self.baskets = BasketRouter(self.universe, settings, store)
        self.lock = threading.RLock()
        self.book = store.book  # positions, live intents, open orders: read from memory, written through
        self.protections = Protections(store)  # the protections table in memory, written through
        self.cap_counters = gates.CapCounters(store)  # the RTH cap counters in memory, written through
        self.params = self._load_params()
        self.latest_scores: dict[str, tuple[float, float]] = {}
        self._last_stop_check: float | None = None
        self._cutoffs: dict[tuple[datetime, float, bool], float] = {}  # see _cutoff
        self._account_memo: tuple[Any, AccountState] | None = None  # see _tick_account
        self._last_equity_minute: int | None = None
        self._restore_runtime_state()
        self._tick_state_at: datetime | None = None  # batch mode: the last tick, whose state the flush writes
        self._summary_at: datetime | None = None  # batch mode: the last minute's gauges, written at the flush
        store.on_flush(self._write_batched_state)
        self._reconciled = False
        self._last_broker_warning: datetime | None = None
        self.storage_error: str | None = None  # set while the database refuses writes (trading stopped)

    def tick(self, now: datetime) -> TickReport:
        now = ensure_utc(now)
        with self.lock:
            rep = TickReport(now=now)
            try:
                with self.store.tick_scope():  # one transaction, committed here or at a barrier before a call out
                    self.feed.ensure(now)
                    if not self._reconciled:
                        self.reconcile(now)
                    if not self.store.batched:  # a replay's database has no UI sending commands
                        rep.commands = self.apply_commands(now)
                    self._tick_body(now, rep)
                self.store.commit()
            except BrokerError as e:
                if self.store.batched:  # a replay batch holds many ticks: rolling back would lose them all
                    raise
                # The broker is unreachable or answered nonsense: trade nothing this tick, say so, try again next.
                self.store.rollback()
                self._reload_after_rollback()
                rep.broker_error = str(e)
                log.warning("tick %s: broker problem, nothing traded: %s", now.isoformat(), e)
                last = self._last_broker_warning
                if last is None or (now - last).total_seconds() >= 60:
                    self._last_broker_warning = now
                    self.store.notify("warning", f"broker problem, trading skipped: {e}", now)
                return self._commit_or_stop(rep, now)
            except sqlite3.DatabaseError as e:
                return self._storage_failed(rep, now, e)
            if self.storage_error is not None:
                log.warning("tick %s: the database is writable again: trading resumes", now.isoformat())
                self.store.notify("warning", f"database writable again after: {self.storage_error}", now)
                self.store.commit()
                self.storage_error = None
            return rep

    def _commit_or_stop(self, rep: TickReport, now: datetime) -> TickReport:
        try:
            self.store.commit()
        except sqlite3.DatabaseError as e:
            return self._storage_failed(rep, now, e)
        return rep

    def _storage_failed(self, rep: TickReport, now: datetime, e: sqlite3.DatabaseError) -> TickReport:
        """A full disk, a read-only or broken database: nothing can be recorded, so nothing is traded (every
        order needs its intent row first). Say so once; every tick tries again."""
        with contextlib.suppress(sqlite3.Error):
            self.store.rollback()
            self._reload_after_rollback()
        rep.storage_error = f"{type(e).__name__}: {e}"
        if self.storage_error is None:
            log.error("tick %s: database not writable (%s): trading stopped until it is", now.isoformat(),
                      rep.storage_error)
        self.storage_error = rep.storage_error
        return rep

    def _tick_body(self, now: datetime, rep: TickReport) -> None:
        self.roll_day(now)
        self.broker.sync(now)
        rep.fills = self._ingest_fills(now)
        if rep.fills:
            self.run_protections(now)  # a fill can complete a stop-out streak or a drawdown
        self._refresh_orders(now)
        self.resolve_submitting(now, min_age_s=self.s.alpaca_timeout_s)
        self._expire_intents(now)
        if is_rth(now):
            self._detect_bench_events(now)
            for sym in self.scheduler.due_tickers(now):
                self._process_ticker(sym, now, None, rep)
            if self.stream is not None:
                self._consume_stream(now, rep)
            self._route_baskets(now, rep)
        self._maybe_check_stops(now)
        self._snapshots(now)

    def apply_commands(self, now: datetime) -> int:
        """Apply the UI's commands in order, each exactly once."""
        cmds = self.store.pending_commands()
        for c in cmds:
            try:
                result = self._apply_command(c, now)
                status = "done"
            except (ConfigError, ValueError, KeyError) as e:
                result, status = f"refused: {e}", "failed"
            self.store.finish_command(c["id"], status, result, now)
            self.store.commit()
        return len(cmds)

    def _apply_command(self, c: dict[str, Any], now: datetime) -> str:
        kind, p, who = c["kind"], c["payload"], c["who"] or "ui"
        if kind == "set_params":
            changes = dict(p)
            source = changes.pop("_source", "command")  # what sent it (slider, research, ...), for the audit
            if source not in COMMAND_SOURCES:
                raise ValueError(f"unknown command source {source!r}")
            self.set_params(changes, who=who, now=now, source=source)
            return "applied"
        if kind == "release_protection":
            return "released" if self.protections.release(int(p["id"]), who=who, now=now) else "not active"
        if kind in ("approve", "reject"):
            return self.decide_intent(str(p["intent_id"]), approve=kind == "approve", who=who, now=now)
        if kind == "close_position":  # the positions table's Close button (core.engine.closing)
            return self.close_position_by_hand(p.get("symbol"), who=who, now=now)
        if kind == "flatten_all":  # Flatten all: close everything, cancel open orders, pause entries
            return self.flatten_all(who=who, now=now)
        raise ValueError(f"unknown command {kind!r}")

    def roll_day(self, now: datetime) -> None:
        """Record the start-of-day equity once per NY trading date (the daily-loss baseline)."""
        day = trading_date(now).isoformat()
        if self.book.start_of_day(day) is None:
            acct = self.broker.get_account(now)
            self.book.record_start_of_day(day, acct.equity, now)
            self.kv.purge_expired(now) if isinstance(self.kv, SqliteKV) else None
            self._expire_profile(now)

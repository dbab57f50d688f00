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
from datetime import datetime
from typing import Any

from core.clock import ensure_utc, is_rth, trading_date
from core.config import ConfigError, LiveParams, Settings
from core.engine.account import Accounts, AccountState, EntryRisk, RiskManager
from core.engine.closing import PositionClosing
from core.engine.commands import CommandRefused, command_who, parse_command
from core.engine.decide import DecisionChain
from core.engine.journal import SessionJournal
from core.engine.ledger import FillLedger
from core.engine.memory import EngineState
from core.engine.orders import OrderFlow
from core.engine.params import LiveParameters
from core.engine.reconcile import Reconciliation
from core.engine.report import TickReport
from core.engine.routing import BasketRouting
from core.engine.scheduler import TierScheduler
from core.engine.snapshots import Snapshots
from core.feed import MarketFeed
from core.rules.protections import RULES, ProtectionRule
from core.services.buckets import LocalTokenBuckets
from core.services.llm import LLMGate
from core.services.redis_stream import SignalStream
from core.state.decisions import FULL, DecisionLog
from core.state.kv import KVStore, SqliteKV
from core.state.protections import Firing
from core.state.store import Store
from core.strategy import Strategy, load_strategy
from core.venues.broker import Broker, BrokerError
from core.venues.marketdata import MarketData
from core.venues.sim.broker import SimBroker

log = logging.getLogger(__name__)

__all__ = ["Engine", "TickReport"]


class Engine:
    """One account's engine: ``tick(now)`` runs the whole cycle over the parts it is built from (this module's
    docstring). Each part gets what it uses in its constructor; ``lock`` serialises ticks, commands and approvals.
    The attributes below the parts are the engine's surface for the runtime, the pages' commands and the tests."""

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
        self.store = store
        self.lock = threading.RLock()
        self.universe = settings.universe
        self.strategy = strategy or load_strategy(settings.strategy)
        # a sweep passes one scored feed to every cell (read-only during a replay)
        self.feed = feed or MarketFeed(market, self.strategy, self.universe.all_symbols)
        self.decisions = DecisionLog(store, decisions)  # live: every row; research: bulk rows as counts
        self.kv: KVStore = kv or SqliteKV(store)
        self.buckets = buckets or LocalTokenBuckets(
            {"A": settings.tier_a_tokens, "B": settings.tier_b_tokens, "Reserve": settings.reserve_tokens},
            borrow_window_s=settings.reserve_borrow_window_s,
        )
        self.scheduler = TierScheduler(self.universe, self.buckets)
        self.broker: Broker = broker or SimBroker(
            store, self.feed, start_cash=settings.sim_start_cash, slippage_bps=settings.sim_slippage_bps,
            fee_per_order=settings.sim_fee_per_order, fee_per_share=settings.sim_fee_per_share,
        )
        self.stream = stream  # Redis ``signals.raw`` (issue 8); None: decide in-process
        # The live app's wall clock (POSIX seconds): a manual intent's approval window counts its seconds, because
        # a human has those, not market seconds (SIM_SPEED). None (replays): every window is market time.
        self.wall = wall
        self.risk = RiskManager(settings)
        # --- the parts, bottom up
        self.state = EngineState(store, self.kv, self.buckets, self.scheduler)
        self.live = LiveParameters(settings, store, self.state.protections, self.lock)
        # rules §6: the gate reads the live LLM_MIN_SIGNAL_SCORE (0.7; relaxed 0.6; rollback 0.65)
        self.llm = LLMGate(settings, store, lambda: self.live.params.llm_min_signal_score) \
            if settings.llm_enabled else None
        self.accounts = Accounts(self.broker, self.feed, self.state.book)
        self.entry_risk = EntryRisk(self.risk, self.state.protections)
        self.orders = OrderFlow(store, self.broker, self.feed, self.state.book, self.live, self.accounts, self.risk,
                                self.entry_risk, self.lock, wall)
        self.decide = DecisionChain(settings, store, self.universe, self.feed, self.state, self.live, self.orders,
                                    self.accounts, self.risk, self.entry_risk, self.decisions, self.llm, stream)
        self.routing = BasketRouting(settings, self.universe, self.feed, self.broker, self.state, self.live,
                                     self.orders, self.accounts, self.risk, self.entry_risk)
        self.ledger = FillLedger(settings, store, self.broker, self.feed, self.state)
        self.reconciliation = Reconciliation(settings, store, self.broker, self.state, self.live, self.orders,
                                             self.ledger)
        self.closing = PositionClosing(settings, store, self.broker, self.feed, self.state.book, self.live,
                                       self.orders, self.lock)
        self.snapshots = Snapshots(store, self.broker, self.state, self.live, self.accounts, self.risk,
                                   self.closing)
        self.journal = SessionJournal(store)  # the session replay's inputs (core.engine.journal)
        self._in_tick = False  # a tick's own stop checks, protections and day roll are not outside calls
        self._last_broker_warning: datetime | None = None
        self.storage_error: str | None = None  # set while the database refuses writes (trading stopped)

    # ------------------------------------------------------------ the state, for the runtime, pages and tests
    def _parts(self) -> tuple[Any, ...]:
        return (self.risk, self.live, self.accounts, self.entry_risk, self.orders, self.decide, self.routing,
                self.ledger, self.reconciliation, self.closing, self.snapshots)

    def _share(self, name: str, value: Any) -> None:
        """Hand a replaced collaborator (a test's broker, the app's wall clock, new settings) to every part."""
        for part in self._parts():
            if hasattr(part, name):
                setattr(part, name, value)

    @property
    def broker(self) -> Broker:
        return self._broker

    @broker.setter
    def broker(self, value: Broker) -> None:
        self._broker = value
        if "snapshots" in self.__dict__:  # built: the parts hold it too
            self._share("broker", value)

    @property
    def wall(self) -> Callable[[], float] | None:
        return self._wall

    @wall.setter
    def wall(self, value: Callable[[], float] | None) -> None:
        self._wall = value
        if "snapshots" in self.__dict__:
            self._share("wall", value)

    @property
    def s(self) -> Settings:
        return self._settings

    @s.setter
    def s(self, value: Settings) -> None:
        self._settings = value
        if "snapshots" in self.__dict__:
            self._share("s", value)
            self.live.params = self.live.params  # the rules' vector from the new settings

    @property
    def params(self) -> LiveParams:
        return self.live.params

    @property
    def book(self):  # noqa: ANN201  (core.state.book.Book)
        return self.state.book

    @property
    def protections(self):  # noqa: ANN201  (core.state.protections.Protections)
        return self.state.protections

    @property
    def cap_counters(self):  # noqa: ANN201  (core.state.caps.CapCounters)
        return self.state.caps

    @property
    def latest_scores(self) -> dict[str, tuple[float, float]]:
        return self.state.latest_scores

    def tick(self, now: datetime) -> TickReport:
        now = ensure_utc(now)
        with self.lock:
            rep = TickReport(now=now)
            try:
                with self.store.tick_scope():  # one transaction, committed here or at a barrier before a call out
                    self._in_tick = True
                    self.feed.ensure(now)
                    if not self.reconciliation.done:
                        self.journal.begin(self, "tick", now, restart=True)
                        self.reconciliation.reconcile(now)
                    else:
                        self.journal.begin(self, "tick", now)
                    if not self.store.batched:  # a replay's database has no UI sending commands
                        rep.commands = self.apply_commands(now)
                    self._tick_body(now, rep)
                self.store.commit()
            except BrokerError as e:
                if self.store.batched:  # a replay batch holds many ticks: rolling back would lose them all
                    raise
                # The broker is unreachable or answered nonsense: trade nothing this tick, say so, try again next.
                self.store.rollback()
                self.state.reload_after_rollback()
                self.journal.begin(self, "tick", now, broker_error=str(e)[:200])  # the outage, for a replay
                rep.broker_error = str(e)
                log.warning("tick %s: broker problem, nothing traded: %s", now.isoformat(), e)
                last = self._last_broker_warning
                if last is None or (now - last).total_seconds() >= 60:
                    self._last_broker_warning = now
                    self.store.notify("warning", f"broker problem, trading skipped: {e}", now)
                return self._commit_or_stop(rep, now)
            except sqlite3.DatabaseError as e:
                return self._storage_failed(rep, now, e)
            finally:
                self._in_tick = False
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
            self.state.reload_after_rollback()
        rep.storage_error = f"{type(e).__name__}: {e}"
        if self.storage_error is None:
            log.error("tick %s: database not writable (%s): trading stopped until it is", now.isoformat(),
                      rep.storage_error)
        self.storage_error = rep.storage_error
        return rep

    def _tick_body(self, now: datetime, rep: TickReport) -> None:
        self.settle(now, rep)
        if is_rth(now):
            self.decide.detect_bench_events(now)
            for sym in self.scheduler.due_tickers(now):
                self.decide.process_ticker(sym, now, None, rep)
            if self.stream is not None:
                self.decide.consume_stream(now, rep)
            self.routing.route(now, rep)
        self.ledger.maybe_check_stops(now)
        self.snapshots.take(now)

    def settle(self, now: datetime, rep: TickReport) -> None:
        """The part of a tick before its decisions: the day roll, the broker's fills (and the protections they can
        fire), the orders' states, expired intents. Running it twice at one ``now`` changes nothing the second time
        (the research kernel runs it alone on a tick whose decisions it makes itself)."""
        self.roll_day(now)
        self.broker.sync(now)
        rep.fills = self.ledger.ingest_fills(now)
        if rep.fills:
            self.run_protections(now)  # a fill can complete a stop-out streak or a drawdown
        self.orders.refresh_orders(now)
        self.orders.resolve_submitting(now, min_age_s=self.s.alpaca_timeout_s)
        self.orders.expire_intents(now)

    def apply_commands(self, now: datetime) -> int:
        """Apply the UI's commands in order, each exactly once. Each row is checked and applied inside its own
        guard (core.engine.commands): one that is malformed or refused is marked ``failed`` with its reason and
        never stops the rows after it or the tick. Only a broker or database failure leaves a row for the next
        tick (the tick's own handling of those)."""
        cmds = self.store.pending_commands()
        if cmds:
            if not self._in_tick:
                self.journal.begin(self, "commands", now)
            self.journal.note(commands=[c["id"] for c in cmds])
        for c in cmds:
            try:
                cmd = parse_command(c["kind"], c["payload"])
                result = self._apply_command(cmd, command_who(c["who"]), now)
                status = "done"
            except (BrokerError, sqlite3.Error):
                raise
            except (CommandRefused, ConfigError, ValueError, KeyError) as e:
                result, status = f"refused: {e}", "failed"
            except Exception as e:  # a command must never stop the engine: refuse it, keep the trace in the log
                log.exception("command %s (%s) failed", c["id"], str(c["kind"])[:40])
                result, status = f"refused: {type(e).__name__}: {e}", "failed"
            if status == "failed":
                log.warning("command %s (%s) %s", c["id"], str(c["kind"])[:40], result)
            self.store.finish_command(c["id"], status, result[:500], now)
            self.store.commit()
        return len(cmds)

    def _apply_command(self, cmd: dict[str, Any], who: str, now: datetime) -> str:
        kind = cmd["kind"]
        if kind == "set_params":
            self.live.set_params(cmd["changes"], who=who, now=now, source=cmd["source"])
            return "applied"
        if kind == "release_protection":
            return "released" if self.state.protections.release(cmd["id"], who=who, now=now) else "not active"
        if kind in ("approve", "reject"):
            return self.orders.decide_intent(cmd["intent_id"], approve=kind == "approve", who=who, now=now)
        if kind == "close_position":  # the positions table's Close button (core.engine.closing)
            return self.closing.close_position_by_hand(cmd["symbol"], who=who, now=now)
        if kind == "flatten_all":  # Flatten all: close everything, cancel open orders, pause entries
            return self.closing.flatten_all(who=who, now=now)
        raise CommandRefused(f"unknown command {kind!r}")

    def roll_day(self, now: datetime) -> None:
        """Record the start-of-day equity once per NY trading date (the daily-loss baseline)."""
        day = trading_date(now).isoformat()
        if self.book.start_of_day(day) is None:
            if not self._in_tick:
                self.journal.begin(self, "roll_day", now)
            acct = self.broker.get_account(now)
            self.book.record_start_of_day(day, acct.equity, now)
            self.kv.purge_expired(now) if isinstance(self.kv, SqliteKV) else None
            self.live.expire_profile(now)

    # ------------------------------------------------------------ what the runtime, the pages and tests call
    def set_params(self, changes: dict[str, Any], *, who: str, now: datetime, source: str = "command") -> LiveParams:
        return self.live.set_params(changes, who=who, now=now, source=source)

    def run_protections(self, now: datetime, rules: tuple[ProtectionRule, ...] = RULES) -> list[Firing]:
        if not self._in_tick:
            self.journal.begin(self, "protections", now)
        return self.live.run_protections(now, rules)

    def reconcile(self, now: datetime) -> list[str]:
        return self.reconciliation.reconcile(now)

    def decide_intent(self, intent_id: str, *, approve: bool, who: str, now: datetime) -> str:
        return self.orders.decide_intent(intent_id, approve=approve, who=who, now=now)

    def close_position_by_hand(self, symbol: Any, *, who: str, now: datetime) -> str:
        return self.closing.close_position_by_hand(symbol, who=who, now=now)

    def flatten_all(self, *, who: str, now: datetime) -> str:
        return self.closing.flatten_all(who=who, now=now)

    def check_stops(self, now: datetime) -> list[str]:
        if not self._in_tick:
            self.journal.begin(self, "stop_check", now)
        return self.ledger.check_stops(now)

    def account_state(self, now: datetime) -> AccountState:
        return self.accounts.account_state(now)

    def portfolio_summary(self, now: datetime) -> dict[str, Any]:
        return self.snapshots.portfolio_summary(now)

    def position_marks(self, now: datetime) -> dict[str, Any]:
        return self.closing.position_marks(now)

    def mix_score(self, symbol: str, technical: float, now: datetime) -> float:
        return self.decide.mix_score(symbol, technical, now)

"""The engine: one ``tick(now)`` is the whole cycle, for live and replay alike.

    commands -> day roll -> broker sync (fills, orders) -> expire intents ->
    tier scheduler + token buckets -> scores -> gates -> long/exit intents ->
    basket router -> risk -> approval queue or submit -> stop checks -> snapshots

Time only ever comes from the ``now`` argument. Every decision is written to
SQLite; commands from the UI arrive through the ``commands`` table.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import sqlite3
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from core.clock import NY, ensure_utc, is_rth, sessions_touched, trading_date
from core.config import ConfigError, LiveParams, Settings, apply_profile, validate_param_changes
from core.engine.intents import (
    EXPIRED,
    PENDING,
    REJECTED,
    SUBMITTING,
    OrderIntent,
    load_intent,
    new_intent,
    price_increment,
    record_broker_order,
    save_intent,
    set_intent_status,
    submit_intent,
)
from core.feed import MarketFeed, Observation
from core.rules import gates
from core.rules.baskets import BasketRouter
from core.rules.protections import (
    RULES,
    SYMBOL_COOLDOWN,
    Firing,
    ProtectionRule,
    Protections,
    evaluate_protections,
    symbol_cooldown_key,
)
from core.rules.ratelimit import LocalTokenBuckets
from core.rules.risk import DAILY_LOSS_REASON, AccountState, PositionRisk, RiskManager
from core.rules.scheduler import TierScheduler
from core.services.llm import LLMEvent, LLMGate, blend
from core.services.redis_stream import SignalStream
from core.state.decisions import COUNTED, FULL, SUMMARY, DecisionLog, restore_scheduler_state
from core.state.kv import KVStore, SqliteKV
from core.state.store import Store, iso
from core.strategy import Strategy, load_strategy
from core.venues.broker import Broker, BrokerError
from core.venues.marketdata import MarketData
from core.venues.sim.broker import SimBroker

log = logging.getLogger(__name__)


def signal_row(now: datetime, sym: str, tier: str, obs: Any, score: float | None, cutoff: float | None,
               decision: str, reason: str | None, action: str | None) -> tuple[Any, ...]:
    """One row of the decision log (shared by the engine and the replay fast path)."""
    return (iso(now), iso(obs.bar_ts) if obs else None, sym, tier,
            None if score is None else round(score, 6), None if obs is None else round(obs.score, 6),
            None if obs is None else round(obs.vol_spike, 6), cutoff, decision, reason, action,
            None if obs is None else obs.close)


def money(x: float) -> str:
    """Dollars with the sign in front: -$636.06."""
    return f"{'-' if x < 0 else ''}${abs(x):,.2f}"


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


class Engine:
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
    ) -> None:
        self.s = settings
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
        # SPEC 6: the gate reads the live LLM_MIN_SIGNAL_SCORE (0.7; relaxed 0.6; rollback 0.65)
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

    # ================================================================ parameters
    def _load_params(self) -> LiveParams:
        row = self.store.one("SELECT json FROM params WHERE id=1")
        base = LiveParams.from_settings(self.s)
        if row is None:
            self.store.upsert("params", {"id": 1, "json": json.dumps(base.as_dict()), "updated_at": None})
            self.store.commit()
            return base
        try:
            saved = json.loads(row["json"])
            return LiveParams(**{**base.as_dict(), **validate_param_changes(
                {k: v for k, v in saved.items() if k in base.as_dict()})})
        except (ConfigError, TypeError, ValueError) as e:
            log.error("stored live parameters unusable (%s); using settings", e)
            return base

    def set_params(self, changes: dict[str, Any], *, who: str, now: datetime, source: str = "command") -> LiveParams:
        """Apply, persist and audit a parameter change (old -> new per name)."""
        with self.lock:
            if "profile" in changes:
                new = apply_profile(self.params, changes["profile"],
                                    self.s.relaxed_sessions if changes["profile"] == "relaxed" else None)
                if changes["profile"] == "default":  # back to the configured defaults
                    d = LiveParams.from_settings(self.s)
                    new = new.with_changes(cutoff_delta=d.cutoff_delta, cooldown_s=d.cooldown_s,
                                           llm_min_signal_score=d.llm_min_signal_score,
                                           reserve_fallback=d.reserve_fallback,
                                           direction_lock_s=d.direction_lock_s)
                rest = {k: v for k, v in changes.items() if k != "profile"}
                new = new.with_changes(**rest) if rest else new
            else:
                new = self.params.with_changes(**changes)
            old = self.params.as_dict()
            for name, value in new.as_dict().items():
                if old[name] != value:
                    self.store.insert("param_audit", {
                        "ts": iso(now), "who": who, "name": name, "old": json.dumps(old[name]),
                        "new": json.dumps(value), "source": source,
                    })
            self.params = new
            self.store.upsert("params", {"id": 1, "json": json.dumps(new.as_dict()), "updated_at": iso(now)})
            self.store.commit()
            return new

    # ================================================================ restart
    def _restore_runtime_state(self) -> None:
        """Rebuild in-memory state from SQLite: last processed times and latest scores per symbol."""
        last, latest = restore_scheduler_state(self.store)
        self.scheduler.last_processed.update(last)
        self.latest_scores.update(latest)
        saved = self.store.get_meta("token_buckets")
        if saved:
            self.buckets.restore(json.loads(saved))
        self._fill_cursor = int(self.store.get_meta("fill_cursor") or 0)  # broker fills taken in so far
        cadence = json.loads(self.store.get_meta("tick_cadence") or "{}")
        self._last_stop_check = cadence.get("stop_check")
        self._last_equity_minute = cadence.get("equity_minute")

    def reconcile(self, now: datetime) -> list[str]:
        """Adopt the broker as truth before the first trade (SPEC 9); returns what was changed."""
        notes: list[str] = []
        if isinstance(self.kv, SqliteKV):  # bench events seen but not yet processed before the stop
            for key, value in self.kv.keys("event:", now).items():
                self.scheduler.pending_events.setdefault(key.removeprefix("event:"), value)
        self.broker.sync(now)
        self._ingest_fills(now)
        notes.extend(self.resolve_submitting(now, restart=True))
        self._reconcile_rest(now, notes)
        self.book.load()  # reconciliation rewrote the tables (adopted orders and positions)
        self._reconciled = True
        return notes

    def resolve_submitting(self, now: datetime, *, restart: bool = False, min_age_s: float = 0.0) -> list[str]:
        """Orders whose submission got no answer (crash, timeout): the broker knows them by client id or never
        saw them; resend while the intent is alive, else close them with a reason."""
        notes: list[str] = []
        for row in self.book.orders_with_status((SUBMITTING,)):
            if min_age_s and (now - datetime.fromisoformat(row["updated_at"])).total_seconds() < min_age_s:
                continue
            order = self.broker.get_order_by_client_id(row["client_order_id"])
            if order is not None:
                with self.store.transaction():
                    record_broker_order(self.store, order, now)
                    set_intent_status(self.store, row["intent_id"], "submitted", now)
                notes.append(f"order {row['client_order_id']} found at broker after restart")
            else:
                intent_row = self.book.intents.get(row["intent_id"]) or self.store.one(
                    "SELECT * FROM intents WHERE id=?", (row["intent_id"],))
                if intent_row and datetime.fromisoformat(intent_row["expires_at"]) > now:
                    submit_intent(self.store, self.broker, load_intent(intent_row), now)
                    notes.append(f"order {row['client_order_id']} resubmitted (broker never saw it)")
                else:
                    with self.store.transaction():
                        self.book.update_order(row["client_order_id"], status="canceled",
                                               reason="not at broker after restart")
                        if intent_row:
                            set_intent_status(self.store, intent_row["id"], "failed", now,
                                              note="not at broker after restart")
                    notes.append(f"order {row['client_order_id']} closed: unknown to broker")
        if not restart:
            for n in notes:
                log.info("submit retry: %s", n)
        return notes

    def _reconcile_rest(self, now: datetime, notes: list[str]) -> None:
        # Auto mode: intents saved just before a crash, never sent.
        if self.params.auto_mode:
            for row in [r for r in self.book.intents_with_status(PENDING) if r["expires_at"] > iso(now)]:
                if self._unsent_pending(row["id"]):
                    submit_intent(self.store, self.broker, load_intent(row), now)
                    notes.append(f"intent {row['id']} submitted after restart")
        # What was just (re)sent may have filled already: take those fills in before comparing positions, or
        # the position would be adopted (or dropped) here and then changed once more by its fill next tick.
        self.broker.sync(now)
        self._ingest_fills(now)
        # Open broker orders we have no record of: adopt and flag.
        for order in self.broker.list_orders(open_only=True):  # looked up one by one: a year of orders is not read
            if self.store.scalar("SELECT 1 FROM orders WHERE client_order_id=?", (order.client_order_id,)) is None:
                with self.store.transaction():
                    record_broker_order(self.store, order, now, intent_id=None)
                    self.store.execute("UPDATE orders SET reason='adopted from broker' WHERE client_order_id=?",
                                       (order.client_order_id,))
                notes.append(f"adopted unknown broker order {order.client_order_id}")
        # Positions: broker is truth.
        broker_pos = {p.symbol: p for p in self.broker.get_positions(now)}
        ours = {r["symbol"]: r for r in self.store.query("SELECT * FROM positions")}
        with self.store.transaction():
            for sym, p in broker_pos.items():
                if sym not in ours:
                    self.store.upsert("positions", {
                        "symbol": sym, "qty": p.qty, "avg_price": p.avg_entry_price, "opened_at": iso(now),
                        "stop_price": p.avg_entry_price * (1 - self.s.stop_loss_pct),
                        "take_profit_price": p.avg_entry_price * (1 + self.s.take_profit_pct), "kind": "adopted",
                        "high": p.market_price, "low": p.market_price, "intent_id": None,
                    })
                    notes.append(f"adopted broker position {sym} x{p.qty}")
                elif abs(ours[sym]["qty"] - p.qty) > 1e-9:
                    self.store.execute("UPDATE positions SET qty=? WHERE symbol=?", (p.qty, sym))
                    notes.append(f"position {sym} qty {ours[sym]['qty']} -> {p.qty} (broker)")
            for sym in set(ours) - set(broker_pos):
                self.store.execute("DELETE FROM positions WHERE symbol=?", (sym,))
                notes.append(f"dropped position {sym}: broker holds none")
            for n in notes:
                self.store.notify("warning", f"reconcile: {n}", now)

    # ================================================================ state
    def account_state(self, now: datetime) -> AccountState:
        acct = self.broker.get_account(now)
        positions = []
        for r in self.book.positions.values():
            px = self.feed.price(r["symbol"], now) or r["avg_price"]
            positions.append(PositionRisk(r["symbol"], r["qty"], r["avg_price"], px, r["stop_price"]))
        live = self.book.pending_buys()  # buys not yet filled: waiting intents, submitted ones still open
        sod = self.book.start_of_day(trading_date(now).isoformat())
        return AccountState(
            equity=acct.equity, cash=acct.cash, buying_power=acct.buying_power,
            start_of_day_equity=sod if sod is not None else acct.equity, positions=tuple(positions),
            pending_notional=sum(q * p for q, p in live), pending_count=len(live),
        )

    def _tick_account(self, now: datetime, rep: TickReport) -> AccountState:
        """``account_state`` for this tick's decisions, built when the first ticker passes its cutoff and again
        after each intent this tick queued (a waiting buy counts against the limits)."""
        key = (now, len(rep.intents))
        memo = self._account_memo
        if memo is not None and memo[0] == key:
            return memo[1]  # type: ignore[no-any-return]
        state = self.account_state(now)
        self._account_memo = (key, state)
        return state

    def portfolio_summary(self, now: datetime) -> dict[str, Any]:
        return self.risk.portfolio_summary(self.account_state(now))

    # ================================================================ the tick
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

    def _reload_after_rollback(self) -> None:
        """The tick's uncommitted writes were rolled back: the in-memory state follows the journal again."""
        self.book.load()
        self.protections.load()
        self.cap_counters.load()
        self._fill_cursor = int(self.store.get_meta("fill_cursor") or 0)

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

    def run_protections(self, now: datetime, rules: tuple[ProtectionRule, ...] = RULES) -> list[Firing]:
        """Check the protections at ``now``: record each firing and apply the parameters it tightens."""
        firings = evaluate_protections(self.protections, self.store, self.s, self.params, now, rules)
        for f in firings:
            self.protections.record(f)
            if f.changes:
                self.set_params(f.changes, who=f"protection:{f.rule}", now=now, source="protection")
        return firings

    # ---------------------------------------------------------------- commands
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
            self.set_params(dict(p), who=who, now=now)
            return "applied"
        if kind == "release_protection":
            return "released" if self.protections.release(int(p["id"]), who=who, now=now) else "not active"
        if kind in ("approve", "reject"):
            return self.decide_intent(str(p["intent_id"]), approve=kind == "approve", who=who, now=now)
        raise ValueError(f"unknown command {kind!r}")

    def decide_intent(self, intent_id: str, *, approve: bool, who: str, now: datetime) -> str:
        """Approve (re-check risk, then submit) or reject a pending intent. Idempotent by intent id."""
        with self.lock:
            self.feed.ensure(now)  # an approval can arrive before the first tick after a restart
            # the one read of an intent from SQLite: a command names it (maybe written by another process)
            row = self.store.one("SELECT * FROM intents WHERE id=?", (intent_id,))
            if row is None:
                raise KeyError(f"no intent {intent_id}")
            self.book.adopt_intent(row)
            if row["status"] != PENDING:
                return f"already {row['status']}"
            intent = load_intent(row)
            if intent.expires_at <= now:
                set_intent_status(self.store, intent_id, EXPIRED, now, who="engine", note="expired before decision")
                self.store.commit()
                return "expired"
            if not approve:
                set_intent_status(self.store, intent_id, REJECTED, now, who=who, note="rejected by trader")
                self.store.commit()
                return "rejected"
            if self.params.paused and not intent.is_exit:
                set_intent_status(self.store, intent_id, REJECTED, now, who=who, note="paused")
                self.store.commit()
                return "refused: trading is paused"
            state = self.account_state(now)
            # The intent itself is counted as pending in ``state``; take it out for its own re-check.
            state = AccountState(state.equity, state.cash, state.buying_power, state.start_of_day_equity,
                                 state.positions, max(0.0, state.pending_notional - intent.qty * intent.price),
                                 max(0, state.pending_count - 1))
            price = self.feed.price(intent.symbol, now) or intent.price
            ok, reason = self.risk.should_allow_trade(state, intent.symbol, intent.side, intent.qty, price,
                                                      is_exit=intent.is_exit)
            self.note_risk_halt(reason, state, now)
            if not ok:
                set_intent_status(self.store, intent_id, REJECTED, now, who=who, note=f"risk re-check: {reason}")
                self.store.commit()
                return f"refused: {reason}"
            set_intent_status(self.store, intent_id, PENDING, now, who=who)
            order = submit_intent(self.store, self.broker, intent, now)
            return "submitted" if order is not None else "submit pending retry"

    # ---------------------------------------------------------------- day roll, fills, orders
    def roll_day(self, now: datetime) -> None:
        """Record the start-of-day equity once per NY trading date (the daily-loss baseline)."""
        day = trading_date(now).isoformat()
        if self.book.start_of_day(day) is None:
            acct = self.broker.get_account(now)
            self.book.record_start_of_day(day, acct.equity, now)
            self.kv.purge_expired(now) if isinstance(self.kv, SqliteKV) else None
            self._expire_profile(now)

    def _expire_profile(self, now: datetime) -> None:
        """A relaxed profile reverts by itself at the first session boundary after its N sessions (SPEC 10)."""
        if self.params.profile != "relaxed" or not self.params.profile_sessions_left:
            return
        since = self.store.scalar("SELECT ts FROM param_audit WHERE name='profile' AND new=? ORDER BY id DESC LIMIT 1",
                                  (json.dumps("relaxed"),))
        start = datetime.fromisoformat(since) if since else None
        used = sessions_touched(start, trading_date(now)) if start else 0
        if used >= self.params.profile_sessions_left:
            self.set_params({"profile": "default"}, who="engine", now=now, source="profile_expiry")
            self.store.notify("info", f"relaxed profile expired after {used} sessions: back to default", now)
            self.store.commit()

    def _ingest_fills(self, now: datetime) -> int:
        cursor = self._fill_cursor
        fills, new_cursor = self.broker.fills_since(cursor)
        if not fills and new_cursor == cursor:
            return 0
        n = 0
        for f in fills:
            with self.store.transaction():
                if self.store.insert("fills", {
                    "id": f.id, "client_order_id": f.client_order_id, "symbol": f.symbol, "side": f.side,
                    "qty": f.qty, "price": f.price, "fee": f.fee, "ts": iso(f.ts),
                }, ignore=True) == 1:
                    self._apply_fill_to_positions(f.symbol, f.side, f.qty, f.price, f.fee, f.ts, f.client_order_id,
                                                  f.leg)
                    n += 1
        with self.store.transaction():
            if new_cursor != cursor:
                self.store.set_meta("fill_cursor", str(new_cursor))
        self._fill_cursor = new_cursor  # once written (a failed write leaves it, and the fills, to the next tick)
        return n

    def _apply_fill_to_positions(self, symbol: str, side: str, qty: float, price: float, fee: float, ts: datetime,
                                 cid: str, leg: str | None) -> None:
        book = self.book
        pos = book.positions.get(symbol)
        intent = None if leg else self._intent_of_order(cid)  # a bracket leg's fill needs only the leg's name
        if side == "buy":
            if pos is None:
                book.open_position({
                    "symbol": symbol, "qty": qty, "avg_price": price, "opened_at": iso(ts),
                    "stop_price": (intent or {}).get("stop_price") or price * (1 - self.s.stop_loss_pct),
                    "take_profit_price": (intent or {}).get("take_profit_price")
                    or price * (1 + self.s.take_profit_pct),
                    "kind": (intent or {}).get("kind", "entry"), "high": price, "low": price,
                    "intent_id": (intent or {}).get("id"),
                })
            else:
                total = pos["qty"] + qty
                avg = (pos["qty"] * pos["avg_price"] + qty * price) / total
                book.update_position(symbol, qty=total, avg_price=avg)
            book.update_position(symbol, fees=(book.positions[symbol].get("fees") or 0) + fee)
            self.store.notify("info", f"filled: bought {qty:g} {symbol} @ {price:,.2f}"
                              + (f" ({intent['kind']}: {intent['reason']})" if intent else ""), ts)
            return
        if pos is None:
            log.warning("sell fill for %s with no recorded position", symbol)
            return
        self._update_excursions(symbol, ts + timedelta(seconds=60))  # through the bar the exit filled in
        entry = pos["avg_price"]
        close_qty = min(qty, pos["qty"])
        fees = fee + (pos.get("fees") or 0.0)
        pnl = (price - entry) * close_qty - fees
        reason = leg or ((intent or {}).get("reason") or "exit")
        self.store.insert("trades", {
            "symbol": symbol, "kind": pos["kind"], "qty": close_qty, "entry_ts": pos["opened_at"],
            "entry_price": entry, "exit_ts": iso(ts), "exit_price": price, "pnl": round(pnl, 6),
            "ret": round((price / entry - 1.0), 8), "exit_reason": reason,
            "mae": round(min(0.0, pos["low"] / entry - 1.0), 8), "mfe": round(max(0.0, pos["high"] / entry - 1.0), 8),
            "fees": fees,
        })
        label = {"stop_loss": "stop-loss exit", "take_profit": "take-profit exit"}.get(reason, "exit")
        self.store.notify("warning" if reason == "stop_loss" else "info",
                          f"{label}: sold {close_qty:g} {symbol} @ {price:,.2f}, P&L {money(pnl)}", ts)
        if pnl < 0 and self.s.protection_symbol_cooldown_s > 0:  # no quick re-entry after a loss
            self.kv.set(symbol_cooldown_key(symbol), "losing_exit", self.s.protection_symbol_cooldown_s, ts)
        left = pos["qty"] - close_qty
        if left <= 1e-9:
            book.close_position(symbol)
        else:
            book.update_position(symbol, qty=left)

    def _intent_of_order(self, cid: str) -> dict[str, Any] | None:
        """The intent behind an order: from the book while it is live, else (an order that ended before its
        fill was read, an adopted one) from the journal."""
        return self.book.intent_of_order(cid) or self.store.one(
            "SELECT i.* FROM intents i JOIN orders o ON o.intent_id=i.id WHERE o.client_order_id=?", (cid,))

    def _update_excursions(self, symbol: str, now: datetime) -> None:
        """Track the high/low since entry for MAE/MFE."""
        pos = self.book.positions.get(symbol)
        if pos is None:
            return
        start = int(datetime.fromisoformat(pos["opened_at"]).timestamp())
        _, _, hi, lo, _ = self.feed.bars_between(symbol, start, now)
        if len(hi):
            self.book.update_position(symbol, high=max(pos["high"], float(hi.max())),
                                      low=min(pos["low"], float(lo.min())))

    def _refresh_orders(self, now: datetime) -> None:
        for row in self.book.orders_with_status(("new", "accepted", "pending_new", "partially_filled")):
            order = self.broker.get_order_by_client_id(row["client_order_id"])
            if order is not None:
                record_broker_order(self.store, order, now)

    def _expire_intents(self, now: datetime) -> None:
        for row in self.book.intents_with_status(PENDING):
            if datetime.fromisoformat(row["expires_at"]) <= now:
                set_intent_status(self.store, row["id"], EXPIRED, now, who="engine", note="not approved in time")

    # ---------------------------------------------------------------- signals
    def _detect_bench_events(self, now: datetime) -> None:
        """Bench tickers run on events: a new EDGAR filing, or a volume/volatility spike on the last bar."""
        bench = self.universe.tiers.get("Bench", ())
        if bench and self.s.edgar_enabled:
            for r in self.store.query(
                    f"SELECT id, symbol FROM events WHERE kind='filing' AND processed_at IS NULL AND created_at > ? "
                    f"AND symbol IN ({','.join('?' * len(bench))})",
                    (iso(now - timedelta(seconds=self.s.event_ttl_s)), *bench)):
                self.scheduler.add_event(r["symbol"], r["id"])
        row = self.feed.row_at(now)
        if row is None:
            return
        spikes, col, limit = row[2], self.feed.col, self.s.vol_spike_event
        for sym in bench:
            j = col.get(sym)
            if j is None or not spikes[j] >= limit:  # NaN: no spike
                continue
            obs = self.feed.observe(sym, now)
            if obs is not None and not math.isnan(obs.vol_spike) and obs.vol_spike >= self.s.vol_spike_event:
                event_id = f"spike:{sym}:{obs.bar_ts.isoformat()}"
                if sym not in self.scheduler.pending_events:
                    self.kv.set(f"event:{sym}", event_id, 300, now)
                self.scheduler.add_event(sym, event_id)

    def _record_signal(self, now: datetime, sym: str, tier: str, obs: Any, score: float | None, cutoff: float | None,
                       decision: str, reason: str | None, action: str | None, rep: TickReport) -> None:
        log_ = self.decisions
        if log_.mode == SUMMARY and reason in COUNTED:  # the bulk of a replay: a count, no row built
            log_.count(sym, tier, decision, reason, iso(now), iso(obs.bar_ts) if obs else None,
                       obs.close if obs else None, None if score is None else round(score, 6), 1)
        else:
            log_.add(signal_row(now, sym, tier, obs, score, cutoff, decision, reason, action))
        if decision == "suppressed" and reason:
            rep.suppressed[reason] = rep.suppressed.get(reason, 0) + 1

    def mix_score(self, symbol: str, technical: float, now: datetime) -> float:
        """Mixer: blend in the newest valid LLM sentiment of the symbol inside the cache window (core.services.llm)."""
        if self.llm is not None and (s := self.llm.latest_sentiment(symbol, now)) is not None:
            return blend(technical, s[0], s[1], self.s.llm_mix_weight)
        return max(-1.0, min(1.0, technical))

    def _event_for(self, sym: str, obs: Any, spike: float, now: datetime) -> LLMEvent | None:
        """The event that makes an LLM call possible for ``sym`` now: a fresh unprocessed filing, else a
        volume/volatility spike on the last bar (SPEC 6). A filing is marked processed here, once."""
        row = self.store.one(
            "SELECT id, form FROM events WHERE symbol=? AND kind='filing' AND processed_at IS NULL AND created_at > ? "
            "ORDER BY created_at LIMIT 1", (sym, iso(now - timedelta(seconds=self.s.event_ttl_s))))
        if row is not None:
            self._take_filing(row["id"], now)
            return LLMEvent(row["id"], sym, "filing", row["form"])
        if spike >= self.s.vol_spike_event:
            return LLMEvent(f"spike:{sym}:{obs.bar_ts.isoformat()}", sym, "spike")
        return None

    def _take_filing(self, event_id: str, now: datetime) -> None:
        """A filing event is handled once: the first time a tick uses it is kept."""
        self.store.execute("UPDATE events SET processed_at=COALESCE(processed_at, ?) WHERE id=?", (iso(now), event_id))

    def _process_ticker(self, sym: str, now: datetime, state: AccountState | None, rep: TickReport) -> None:
        tier = self.universe.get_ticker_tier(sym) or "Bench"
        grant = self.scheduler.consume_api_token_for_ticker(sym, now, allow_borrow=self.params.reserve_fallback)
        if not grant.granted:
            self._record_signal(now, sym, tier, None, None, None, "suppressed", "rate_limited", None, rep)
            return
        pending = self.scheduler.pending_events.get(sym)
        if pending is not None:
            self.kv.delete(f"event:{sym}")
        self.scheduler.mark_processed(sym, now)
        obs = self.feed.observe(sym, now)
        if obs is None or math.isnan(obs.score):
            self._record_signal(now, sym, tier, obs, None, None, "skipped", "no_data", None, rep)
            return
        rep.processed += 1
        spike = 0.0 if math.isnan(obs.vol_spike) else obs.vol_spike
        if self.llm is not None:  # queue a call (made by its own job; the answer mixes in on later ticks)
            self.llm.request(self._event_for(sym, obs, spike, now), obs.score, spike, now)
        if pending is not None and not pending.startswith("spike:"):
            self._take_filing(pending, now)
        score = self.mix_score(sym, obs.score, now)
        self.latest_scores[sym] = (now.timestamp(), score)
        cutoff = self._cutoff(now, spike)
        if self.stream is not None:
            msg = {"ts": iso(now), "symbol": sym, "tier": tier, "score": score, "cutoff": cutoff,
                   "bar_ts": iso(obs.bar_ts), "raw_score": obs.score, "vol_spike": obs.vol_spike, "close": obs.close}
            self.store.barrier()  # a message leaves the process: what this tick did so far is on disk
            if self.stream.publish(msg) is not None:
                self._published.append(msg)
                return  # decided by the consumer group (this process reads it back in the same tick)
        self._decide_ticker(now, sym, tier, obs, score, cutoff, state, rep)

    def _cutoff(self, now: datetime, spike: float) -> float:
        """``gates.dynamic_cutoff``, computed once per tick for each volatility regime."""
        high = spike >= self.s.cutoff_high_vol_spike
        key = (now, self.params.cutoff_delta, high)
        got = self._cutoffs.get(key)
        if got is None:
            if len(self._cutoffs) > 64:
                self._cutoffs.clear()
            got = self._cutoffs[key] = gates.dynamic_cutoff(now, spike, self.s, self.params.cutoff_delta)
        return got

    def _consume_stream(self, now: datetime, rep: TickReport) -> int:
        """Decide the stream's messages: first those a crashed consumer left pending, then new ones. Each is
        acknowledged after its decision row is stored; one already stored is only acknowledged."""
        assert self.stream is not None
        msgs = self.stream.claim_stale(int(self.s.redis_claim_idle_s * 1000)) + self.stream.read()
        if not self.stream.link.up:  # Redis went away after this tick published: decide those here
            msgs += [("", m) for m in self._published]
        self._published = []
        state = self.account_state(now)
        for mid, m in msgs:
            at = datetime.fromisoformat(m["ts"])
            if self.store.scalar("SELECT 1 FROM signals WHERE symbol=? AND ts=?", (m["symbol"], m["ts"])) is None:
                obs = Observation(m["symbol"], datetime.fromisoformat(m["bar_ts"]), float(m["raw_score"]),
                                  float(m["vol_spike"]), float(m["close"]))
                before = len(rep.intents)
                self._decide_ticker(at, m["symbol"], m["tier"], obs, float(m["score"]), float(m["cutoff"]), state,
                                    rep)
                self.store.barrier()  # the decision is stored before the acknowledgement
                state = self.account_state(now) if len(rep.intents) > before else state
            if mid:
                self.stream.ack([mid])
        return len(msgs)

    def _decide_ticker(self, now: datetime, sym: str, tier: str, obs: Observation, score: float, cutoff: float,
                       state: AccountState | None, rep: TickReport) -> None:
        """The gates after the cutoff, and the intent they allow (SPEC 4, 7). ``state``: None for this tick's
        account (built only when a ticker gets past the cutoff)."""

        def suppress(reason: str) -> None:
            self._record_signal(now, sym, tier, obs, score, cutoff, "suppressed", reason, None, rep)

        if (r := gates.check_cutoff(score, cutoff)) is not None:
            return suppress(r)
        if state is None:
            state = self._tick_account(now, rep)
        sign = 1 if score > 0 else -1
        held = state.holds(sym)
        if sign < 0 and held:
            # A strong negative signal on a held long closes it; exits skip entry gates (they reduce risk).
            gates.record_strong_signal(self.kv, sym, sign, self.params.direction_lock_s, now)
            if self._live_intent_for(sym):
                return suppress("intent_pending")
            qty = next(p.qty for p in state.positions if p.symbol == sym)
            intent = new_intent("exit", sym, "sell", qty, obs.close, now, self.s.intent_ttl_s,
                                reason=f"signal exit: score {score:+.2f} <= -{cutoff:.2f}", source=f"signal:{sym}")
            # the decision row first: it commits with the intent, so a crash during the submission cannot leave
            # an intent without its decision (a re-run tick would decide the ticker again, differently)
            self._record_signal(now, sym, tier, obs, score, cutoff, "actionable", None, "exit", rep)
            self._queue_intent(intent, now, rep)
            rep.actionable += 1
            return
        if (r := gates.check_mixer_cooldown(self.kv, sym, now)) is not None:
            return suppress(r)
        if (r := gates.check_direction_lock(self.kv, sym, sign, now)) is not None:
            return suppress(r)
        gates.record_strong_signal(self.kv, sym, sign, self.params.direction_lock_s, now)
        if sign > 0:
            if self.params.paused:
                return suppress("paused")
            if (rule := self.protections.entries_paused_by(now)) is not None:
                return suppress(f"protection:{rule}")
            if self.kv.get(symbol_cooldown_key(sym), now) is not None:
                return suppress(SYMBOL_COOLDOWN)
            if held:
                return suppress("already_held")
            if self._live_intent_for(sym):
                return suppress("intent_pending")
            price = obs.close
        else:
            basket = self.universe.basket_of(sym)
            price = self.feed.price(basket.inverse_etf, now) if basket else obs.close
        ok, reason = self.entry_risk_check(state, price, now)
        if not ok:
            return suppress(reason)
        slot = self.universe.tier_intervals_s.get(tier, 60)
        if (r := gates.check_rth_daily_cap(self.cap_counters.view(), self.s, sym, tier, now)) is not None:
            return suppress(r)
        gates.record_rth_signal(self.cap_counters, self.kv, self.s, sym, now, slot)
        gates.start_cooldown(self.kv, sym, self.params.cooldown_s, now)
        rep.actionable += 1
        if sign < 0:  # evidence for the basket router
            self._record_signal(now, sym, tier, obs, score, cutoff, "actionable", None, "evidence", rep)
            return
        size = self.risk.size_for(state, price)
        intent = new_intent(
            "entry", sym, "buy", size.qty, price, now, self.s.intent_ttl_s,
            reason=f"score {score:+.2f} >= {cutoff:.2f}" + (f" (size capped by {size.capped_by})"
                                                             if size.capped_by else ""),
            source=f"signal:{sym}", stop_price=price_increment(price * (1 - self.s.stop_loss_pct)),
            take_profit_price=price_increment(price * (1 + self.s.take_profit_pct)),
            risk_after=round(self.risk.risk_after_fill(state, size.qty, price), 6),
        )
        self._record_signal(now, sym, tier, obs, score, cutoff, "actionable", None, "long", rep)  # with the intent
        self._queue_intent(intent, now, rep)

    def entry_risk_check(self, state: AccountState, price: float | None, now: datetime) -> tuple[bool, str]:
        """``check_signal_risk_feasibility``, recording the day's first daily-loss halt as a protection."""
        ok, reason = self.risk.check_signal_risk_feasibility(state, price)
        self.note_risk_halt(reason, state, now)
        return ok, reason

    def note_risk_halt(self, reason: str, state: AccountState, now: datetime) -> None:
        """A refusal by the daily loss limit is recorded as the day's ``daily_loss`` protection."""
        if reason == DAILY_LOSS_REASON:
            self.protections.record_daily_loss_halt(now, self.risk.daily_loss(state), self.s.daily_loss_limit)

    def _live_intent_for(self, symbol: str) -> bool:
        return self.book.live_intent_for(symbol)

    def _queue_intent(self, intent: OrderIntent, now: datetime, rep: TickReport) -> None:
        """Manual mode: wait for Approve. Auto mode: submit now."""
        with self.store.transaction():
            created = save_intent(self.store, intent, PENDING)
        if created:
            rep.intents.append(intent.id)
        elif not self._unsent_pending(intent.id):
            return  # this tick already ran before a restart and the intent went its way
        if self.params.auto_mode:
            self.store.barrier()  # the decision and its intent are on disk before the order is sent
            submit_intent(self.store, self.broker, intent, now)

    def _unsent_pending(self, intent_id: str) -> bool:
        return self.book.unsent_pending(intent_id)

    # ---------------------------------------------------------------- baskets
    def _route_baskets(self, now: datetime, rep: TickReport) -> None:
        for basket in self.universe.baskets:
            ev = self.baskets.evaluate(basket, self.latest_scores, now)
            blocked, intent_id = None, None
            if ev.fires:
                held = self.book.holds()
                held |= {p.symbol for p in self.broker.get_positions(now)}  # holdings made outside the app too
                etf = basket.inverse_etf
                conflicts = self.baskets.conflicts_held(basket, held)
                state = self.account_state(now)
                price = self.feed.price(etf, now)
                if self.params.paused:
                    blocked = "paused"
                elif (rule := self.protections.entries_paused_by(now)) is not None:
                    blocked = f"protection:{rule}"
                elif etf in held:
                    blocked = "etf_held"
                elif conflicts:
                    blocked = "conflict:" + ",".join(conflicts)
                elif self._live_intent_for(etf):
                    blocked = "intent_pending"
                else:
                    ok, reason = self.entry_risk_check(state, price, now)
                    if not ok:
                        blocked = reason
                    elif not self.kv.set_nx(f"etf_lock:{etf}", basket.name, self.s.etf_lock_s, now):
                        blocked = "etf_lock"
                if blocked is None and price is not None:
                    size = self.risk.size_for(state, price)
                    intent = new_intent(
                        "basket", etf, "buy", size.qty, price, now, self.s.intent_ttl_s,
                        reason=(f"{basket.name}: {ev.n_signals} members, {ev.negative_ratio:.0%} negative, "
                                f"mean {ev.mean_score:+.3f}, {ev.consecutive} ticks; ETF score "
                                f"{ev.inverted_score:+.3f}"),
                        source=f"basket:{basket.name}", stop_price=price_increment(price * (1 - self.s.stop_loss_pct)),
                        take_profit_price=price_increment(price * (1 + self.s.take_profit_pct)),
                        risk_after=round(self.risk.risk_after_fill(state, size.qty, price), 6),
                    )
                    intent_id = intent.id
                    self._queue_intent(intent, now, rep)
            self.baskets.save(ev, now, blocked_by=blocked, intent_id=intent_id)

    # ---------------------------------------------------------------- stops
    def _maybe_check_stops(self, now: datetime) -> None:
        t = now.timestamp()
        if self._last_stop_check is not None and t - self._last_stop_check < self.s.stop_check_interval_s:
            return
        self._last_stop_check = t
        self.check_stops(now)

    def check_stops(self, now: datetime) -> list[str]:
        """Update MAE/MFE; exit positions that have no protective legs at the broker and crossed a level."""
        exits = []
        for pos in list(self.book.positions.values()):
            sym = pos["symbol"]
            self._update_excursions(sym, now)
            if pos["kind"] != "adopted" or not is_rth(now):
                continue  # our own entries carry bracket legs at the broker
            px = self.feed.price(sym, now)
            if px is None:
                continue
            why = "stop_loss" if px <= pos["stop_price"] else ("take_profit" if px >= pos["take_profit_price"]
                                                                 else None)
            if why and not self._live_intent_for(sym):
                intent = new_intent("exit", sym, "sell", pos["qty"], px, now, self.s.intent_ttl_s,
                                    reason=why, source="stop_check")
                with self.store.transaction():
                    save_intent(self.store, intent, PENDING)
                submit_intent(self.store, self.broker, intent, now)  # stops run even when paused or manual
                exits.append(sym)
        return exits

    def save_tick_state(self) -> None:
        """What a restart needs to carry on as if it never stopped: the token buckets (levels and this minute's
        counts) and the cadence of the stop checks and equity snapshots. Written with the tick it belongs to."""
        self.store.set_meta("token_buckets", json.dumps(self.buckets.dump()))
        self.store.set_meta("tick_cadence", json.dumps({"stop_check": self._last_stop_check,
                                                        "equity_minute": self._last_equity_minute}))

    # ---------------------------------------------------------------- snapshots
    def _snapshots(self, now: datetime) -> None:
        minute = int(now.timestamp()) // 60
        if minute != self._last_equity_minute:
            self._last_equity_minute = minute
            acct = self.broker.get_account(now)
            self.store.upsert("equity", {"ts": iso(now), "equity": round(acct.equity, 4),
                                         "cash": round(acct.cash, 4),
                                         "exposure": round(acct.equity - acct.cash, 4)})
            if self.store.batched:
                self._summary_at = now
            else:
                self._save_summary(now)
        for m, tier, req, granted, borrowed in self.buckets.drain_stats(now):
            self.store.upsert("token_stats", {
                "minute": datetime.fromtimestamp(m * 60, NY).isoformat(), "tier": tier, "requested": req,
                "granted": granted, "borrowed": borrowed,
            })
        if self.store.batched:  # only the last tick's values matter: written once, at the batch's flush
            self._tick_state_at = now
            return
        self._save_heartbeat(now)

    def _save_summary(self, now: datetime) -> None:
        # the UI (maybe another process) reads the gauges from here, not from the engine object
        summary = self.portfolio_summary(now)
        summary["ts"] = iso(now)
        self.store.set_meta("portfolio_summary", json.dumps(summary))

    def _save_heartbeat(self, now: datetime) -> None:
        self.save_tick_state()
        self.store.put("heartbeat", {"name": "tick", "ts": iso(now), "info": json.dumps({
            "paused": self.params.paused, "auto_mode": self.params.auto_mode})})

    def _write_batched_state(self) -> None:
        """At a replay batch's flush: the gauges, the tick state and the heartbeat of the batch's last tick."""
        if self._summary_at is not None:
            self._save_summary(self._summary_at)
            self._summary_at = None
        if self._tick_state_at is not None:
            self._save_heartbeat(self._tick_state_at)
            self._tick_state_at = None


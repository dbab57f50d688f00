"""The engine's state in memory and how it comes back from SQLite.

The tick reads its book, protections and RTH cap counters from memory (``core.state``), written through to SQLite
inside the tick's transaction. This module restores what a restart needs (last processed times, latest scores,
token buckets, the fill cursor, the cadence of stop checks and equity snapshots), reloads the in-memory parts when
a tick's writes were rolled back, and builds the ``AccountState`` every risk decision takes.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

from core.clock import trading_date
from core.feed import MarketFeed
from core.rules import gates
from core.rules.protections import Protections
from core.rules.ratelimit import LocalTokenBuckets
from core.rules.risk import AccountState, PositionRisk, RiskManager
from core.rules.scheduler import TierScheduler
from core.state.book import Book
from core.state.decisions import restore_scheduler_state
from core.state.store import Store
from core.venues.broker import Broker

if TYPE_CHECKING:
    from core.engine.tick import TickReport


class MemoryState:
    """Restore, reload and save the in-memory state; the account state the decisions read."""

    store: Store
    broker: Broker
    feed: MarketFeed
    book: Book
    protections: Protections
    cap_counters: gates.CapCounters
    buckets: LocalTokenBuckets
    scheduler: TierScheduler
    risk: RiskManager
    latest_scores: dict[str, tuple[float, float]]
    _fill_cursor: int
    _last_stop_check: float | None
    _last_equity_minute: int | None
    _account_memo: tuple[Any, AccountState] | None

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

    def _reload_after_rollback(self) -> None:
        """The tick's uncommitted writes were rolled back: the in-memory state follows the journal again."""
        self.book.load()
        self.protections.load()
        self.cap_counters.load()
        self._fill_cursor = int(self.store.get_meta("fill_cursor") or 0)

    def save_tick_state(self) -> None:
        """What a restart needs to carry on as if it never stopped: the token buckets (levels and this minute's
        counts) and the cadence of the stop checks and equity snapshots. Written with the tick it belongs to."""
        self.store.set_meta("token_buckets", json.dumps(self.buckets.dump()))
        self.store.set_meta("tick_cadence", json.dumps({"stop_check": self._last_stop_check,
                                                        "equity_minute": self._last_equity_minute}))

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
            pending_approvals=sum(1 for r in self.book.intents_with_status("pending") if r["side"] == "buy"),
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

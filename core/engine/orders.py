"""Order flow: an intent is queued (manual mode: it waits for Approve; auto mode: it is sent), approved or rejected
by a command, expired when not approved in time, and its order followed at the broker.

Intents and the idempotent submission itself are ``core.engine.intents``: the intent row is committed (a barrier)
before its order leaves the process, and an order whose submission got no answer is found by its client id or
resent (``resolve_submitting``), so it reaches the broker once.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from datetime import datetime

from core.engine.account import Accounts, AccountState, EntryRisk, RiskManager
from core.engine.intents import (
    EXPIRED,
    PENDING,
    REJECTED,
    SUBMITTING,
    OrderIntent,
    intent_expired,
    load_intent,
    record_broker_order,
    row_expired,
    save_intent,
    set_intent_status,
    submit_intent,
)
from core.engine.params import LiveParameters
from core.engine.report import TickReport
from core.engine.sending import SendQuote, quote_send, without_intent
from core.feed import MarketFeed
from core.state.book import Book
from core.state.store import Store
from core.venues.broker import Broker

log = logging.getLogger(__name__)


class OrderFlow:
    """Queue, approve/reject, expire and follow intents and their orders."""

    def __init__(self, store: Store, broker: Broker, feed: MarketFeed, book: Book, live: LiveParameters,
                 accounts: Accounts, risk: RiskManager, entry_risk: EntryRisk, lock: threading.RLock,
                 wall: Callable[[], float] | None) -> None:
        self.store = store
        self.broker = broker
        self.feed = feed
        self.book = book
        self.live = live
        self.accounts = accounts
        self.risk = risk
        self.entry_risk = entry_risk
        self.lock = lock
        self.wall = wall  # the live app's wall clock (POSIX s); None in a replay (see the approval window)

    def _wall_now(self) -> float | None:
        return self.wall() if self.wall is not None else None

    def queue_intent(self, intent: OrderIntent, now: datetime, rep: TickReport) -> None:
        """Manual mode: wait for Approve. Auto mode: submit now."""
        wall_now = self._wall_now()
        if wall_now is not None and not self.live.params.auto_mode:
            # A human decides: the window counts wall seconds (at SIM_SPEED=60 the market's 120 s pass in 2 s).
            ttl_s = (intent.expires_at - intent.created_at).total_seconds()
            intent = dataclasses.replace(intent, approve_by=wall_now + ttl_s)
        with self.store.transaction():
            created = save_intent(self.store, intent, PENDING)
        if created:
            rep.intents.append(intent.id)
        elif not self.unsent_pending(intent.id):
            return  # this tick already ran before a restart and the intent went its way
        if self.live.params.auto_mode:
            self.store.barrier()  # the decision and its intent are on disk before the order is sent
            submit_intent(self.store, self.broker, intent, now)

    def unsent_pending(self, intent_id: str) -> bool:
        return self.book.unsent_pending(intent_id)

    def live_intent_for(self, symbol: str) -> bool:
        return self.book.live_intent_for(symbol)

    def quote(self, intent: OrderIntent, now: datetime) -> tuple[SendQuote, AccountState]:
        """The order ``intent`` would be sent as now (re-priced at the current price), or why it would not; and
        the account it was judged on. Reads only: the Approvals page shows it, an approval acts on it."""
        state = without_intent(self.accounts.account_state(now), intent)
        price = self.feed.price(intent.symbol, now)
        params = self.live.params
        q = quote_send(intent, state, price, self.risk, paused=params.paused,
                       protection=self.entry_risk.protections.entries_paused_by(now),
                       max_move_pct=self.risk.s.approval_max_move_pct, at=now)
        return q, state

    def quote_pending(self, now: datetime) -> dict[str, SendQuote]:
        """Every waiting intent as it would be sent now (the Approvals page's cards)."""
        with self.lock:
            self.feed.ensure(now)
            return {r["id"]: self.quote(load_intent(r), now)[0] for r in self.book.intents_with_status(PENDING)}

    def decide_intent(self, intent_id: str, *, approve: bool, who: str, now: datetime) -> str:
        """Approve (re-price at the current price, re-check, then submit) or reject a pending intent. Idempotent
        by intent id. The answer says what was sent, or why not in words with the stored code beside them."""
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
            if intent_expired(intent.expires_at, intent.approve_by, now, self._wall_now()):
                set_intent_status(self.store, intent_id, EXPIRED, now, who="engine", note="expired before decision")
                self.store.commit()
                return "expired"
            if not approve:
                set_intent_status(self.store, intent_id, REJECTED, now, who=who, note="rejected by trader")
                self.store.commit()
                return "rejected"
            q, state = self.quote(intent, now)
            self.entry_risk.note_halt(q.stored, state, now)
            if not q.ok:
                set_intent_status(self.store, intent_id, REJECTED, now, who=who, note=q.note)
                self.store.commit()
                return f"refused: {q.note}"
            if not intent.is_exit:
                intent = self._reprice(intent, q)
            set_intent_status(self.store, intent_id, PENDING, now, who=who)
            order = submit_intent(self.store, self.broker, intent, now)
            if order is None:
                return f"submit pending retry: {q.summary()}"
            return ("rejected by the broker: " + (order.reason or "no reason given")) if order.status == "rejected" \
                else f"submitted: {q.summary()}"

    def _reprice(self, intent: OrderIntent, q: SendQuote) -> OrderIntent:
        """The intent as it is sent: the quote's shares and bracket, and the price they were made at (the signal's
        price stays in ``price``)."""
        sent = dataclasses.replace(intent, qty=float(q.qty), stop_price=q.stop_price,
                                   take_profit_price=q.take_profit_price, risk_after=q.risk_after)
        with self.store.transaction():
            self.book.reprice_intent(intent.id, qty=sent.qty, notional=q.notional, stop_price=sent.stop_price,
                                     take_profit_price=sent.take_profit_price, risk_after=sent.risk_after,
                                     sent_price=q.price_now)
        return sent

    def refresh_orders(self, now: datetime) -> None:
        for row in self.book.orders_with_status(("new", "accepted", "pending_new", "partially_filled")):
            order = self.broker.get_order_by_client_id(row["client_order_id"])
            if order is not None:
                record_broker_order(self.store, order, now)

    def expire_intents(self, now: datetime) -> None:
        wall_now = self._wall_now()
        for row in self.book.intents_with_status(PENDING):
            if row_expired(row, now, wall_now):
                set_intent_status(self.store, row["id"], EXPIRED, now, who="engine", note="not approved in time")

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
                if intent_row and not row_expired(intent_row, now, self._wall_now()):
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

"""Closing positions by hand (issue 17): **Close** one position, or **Flatten all** (close every position, cancel
every other open order and pause new entries). Both arrive as commands from the UI (``close_position``,
``flatten_all``), audited in ``commands``, and are applied here under the engine's lock.

Never two closing orders for one position, whatever the clicks: a close is refused while one for the symbol is
still live (its intent is being sent, or its order is open), so a double click or a second tab gets "already
closing"; and each close is an exit intent whose id is derived from the position it closes (symbol, entry time,
attempt number), so its ``client_order_id`` is deterministic like every other order's: a retry after a crash or a
lost answer reaches the broker with the same id and finds the first order. The closing order's fill goes through
the normal fill ledger; the trade's ``exit_reason`` is the intent's reason, ``manual_close`` or ``flatten``.
"""

from __future__ import annotations

import logging
import re
import threading
from datetime import datetime, timedelta
from typing import Any

from core.config import Settings
from core.engine.intents import (
    FAILED,
    PENDING,
    REJECTED,
    SUBMITTED,
    SUBMITTING,
    OrderIntent,
    record_broker_order,
    save_intent,
    set_intent_status,
    submit_intent,
)
from core.engine.orders import OrderFlow
from core.engine.params import LiveParameters
from core.feed import MarketFeed
from core.state.book import Book
from core.state.store import Store, iso
from core.venues.broker import Broker, BrokerError, BrokerOrder

log = logging.getLogger(__name__)

MANUAL_CLOSE = "manual_close"
FLATTEN = "flatten"
_SYMBOL = re.compile(r"^[A-Z][A-Z0-9.]{0,9}$")


def close_symbol(value: Any) -> str:
    """The symbol a close command names, upper-cased; anything else is refused naming the value."""
    sym = value.strip().upper() if isinstance(value, str) else None
    if not sym or not _SYMBOL.match(sym):
        raise ValueError(f"close_position needs a ticker symbol, got {value!r}")
    return sym


class PositionClosing:
    """Close and Flatten all, and the last prices of the held positions for the positions table."""

    def __init__(self, settings: Settings, store: Store, broker: Broker, feed: MarketFeed, book: Book,
                 live: LiveParameters, orders: OrderFlow, lock: threading.RLock) -> None:
        self.s = settings
        self.store = store
        self.broker = broker
        self.feed = feed
        self.book = book
        self.live = live
        self.orders = orders
        self.lock = lock

    # ------------------------------------------------------------ one position
    def close_position_by_hand(self, symbol: Any, *, who: str, now: datetime) -> str:
        """Close the whole position in ``symbol`` at market (cancelling its stop and take-profit legs)."""
        sym = close_symbol(symbol)
        with self.lock:
            self.feed.ensure(now)  # a command can arrive before the first tick after a restart
            pos = self.book.positions.get(sym)
            if pos is None:
                raise ValueError(f"no open position in {sym}: nothing to close")
            busy = self._closing_intent(sym)
            if busy is not None:
                return f"already closing {sym} ({busy['reason']}, order {busy['client_order_id']})"
            self._supersede_pending(sym, now, who=who, note="superseded by a manual close")
            intent = self._close_intent(sym, pos["qty"], pos, MANUAL_CLOSE, who, now)
            with self.store.transaction():
                save_intent(self.store, intent, PENDING)
                self.store.notify("info", f"manual close of {sym} x{intent.qty:g} requested by {who}", now)
            order = submit_intent(self.store, self.broker, intent, now)
            self.store.commit()
            return self._outcome(intent, order)

    # ------------------------------------------------------------ every position
    def flatten_all(self, *, who: str, now: datetime) -> str:
        """The kill switch: pause new entries, reject intents waiting for approval, cancel every open order and
        close every position (the engine's and any other the broker holds), each close with its own client id."""
        with self.lock:
            self.feed.ensure(now)
            notes = []
            if not self.live.params.paused:
                self.live.set_params({"paused": True}, who=who, now=now, source=FLATTEN)
            notes.append("entries paused")
            waiting = [r["id"] for r in self.book.intents_with_status(PENDING)]
            with self.store.transaction():
                for intent_id in waiting:
                    set_intent_status(self.store, intent_id, REJECTED, now, who=who, note="rejected by flatten all")
            if waiting:
                notes.append(f"{len(waiting)} waiting intent(s) rejected")
            qty = {sym: pos["qty"] for sym, pos in self.book.positions.items()}
            try:  # a position only the broker knows of is closed too
                qty.update({p.symbol: p.qty for p in self.broker.get_positions(now)
                            if p.qty > 0 and p.symbol not in qty})
            except BrokerError as e:
                notes.append(f"broker positions not read ({e})")
            ids: dict[str, str] = {}
            new: dict[str, OrderIntent] = {}
            for sym in sorted(qty):
                busy = self._closing_intent(sym)
                if busy is not None:  # already closing: the broker keeps (and returns) that order
                    ids[sym] = busy["client_order_id"]
                    notes.append(f"{sym} already closing")
                    continue
                intent = self._close_intent(sym, qty[sym], self.book.positions.get(sym), FLATTEN, who, now)
                new[sym], ids[sym] = intent, intent.client_order_id
            with self.store.transaction():
                for intent in new.values():
                    save_intent(self.store, intent, PENDING)
                    self._begin_submission(intent, now)
                self.store.notify("warning", f"flatten all requested by {who}: closing "
                                  f"{', '.join(f'{s} x{qty[s]:g}' for s in sorted(qty)) or 'nothing'}; "
                                  f"new entries paused", now)
            self.store.barrier()  # the intents and their order rows are on disk before the orders leave
            try:
                results = self.broker.close_all_positions(now, ids, cancel_orders=True)
            except BrokerError as e:
                log.warning("flatten all: broker problem, closes will be retried with the same client ids: %s", e)
                with self.store.transaction():
                    for intent in new.values():
                        self.book.update_order(intent.client_order_id, reason=str(e), updated_at=iso(now))
                self.store.commit()
                return "; ".join([*notes, f"broker problem ({e}): {len(new)} close order(s) will be retried with "
                                  f"the same client ids; open orders may not all be cancelled: flatten again"])
            with self.store.transaction():
                for r in results:
                    intent = new.get(r.symbol)
                    if intent is None:
                        if r.symbol not in ids:
                            notes.append(f"{r.symbol}: {r.message}")
                        continue
                    self._finish_submission(intent, r.order, now)
                    notes.append(self._outcome(intent, r.order))
            try:
                self.orders.refresh_orders(now)  # the entries it cancelled end now
            except BrokerError as e:
                log.warning("flatten all: order refresh failed, next tick refreshes: %s", e)
            self.store.commit()
            return "; ".join(notes)

    # ------------------------------------------------------------ last prices for the positions table
    def position_marks(self, now: datetime) -> dict[str, Any]:
        """The last price of every held position (the feed's last completed bar), for the UI's positions table:
        the pages read SQLite only, and an inverse ETF or a Bench ticker has no recent decision row to read it
        from."""
        prices = {}
        for sym in self.book.positions:
            px = self.feed.price(sym, now)
            if px is not None:
                prices[sym] = px
        return {"ts": iso(now), "prices": prices}

    # ------------------------------------------------------------ helpers
    def _closing_intent(self, symbol: str) -> dict[str, Any] | None:
        """The live sell of ``symbol`` that is being sent or whose order is open (a close, a signal or stop exit)."""
        for r in self.book.intents.values():
            if r["symbol"] == symbol and r["side"] == "sell" and r["status"] in (SUBMITTING, "submitted"):
                return r
        return None

    def _supersede_pending(self, symbol: str, now: datetime, *, who: str, note: str) -> None:
        """An exit waiting for Approve on this symbol would sell shares the close already sold: it is rejected."""
        with self.store.transaction():
            for r in [r for r in self.book.intents_with_status(PENDING) if r["symbol"] == symbol]:
                set_intent_status(self.store, r["id"], REJECTED, now, who=who, note=note)

    def _close_intent(self, symbol: str, qty: float, pos: dict[str, Any] | None, reason: str, who: str,
                      now: datetime) -> OrderIntent:
        """An exit intent whose id names the position (symbol, entry time) and the attempt: the same request finds
        the same id; a new attempt after a close that failed (refused, no fill) gets the next one."""
        opened = re.sub(r"[^0-9A-Za-z]", "", str((pos or {}).get("opened_at") or "broker"))[:15]
        prefix = f"close-{symbol}-{opened}-"
        # earlier attempts on this position ('~' sorts after every digit: a range on the primary key)
        attempt = 1 + int(self.store.scalar("SELECT COUNT(*) FROM intents WHERE id > ? AND id < ?",
                                            (prefix, prefix + "~")) or 0)
        price = self.feed.price(symbol, now) or (pos or {}).get("avg_price") or 0.0
        return OrderIntent(
            id=f"{prefix}{attempt}", created_at=now, symbol=symbol, side="sell", qty=float(qty), price=float(price),
            kind="exit", reason=reason, source=who, expires_at=now + timedelta(seconds=self.s.intent_ttl_s))

    def _begin_submission(self, intent: OrderIntent, now: datetime) -> None:
        """The order row (``submitting``) written before the broker is called, as ``submit_intent`` does."""
        self.book.add_order({
            "client_order_id": intent.client_order_id, "intent_id": intent.id, "symbol": intent.symbol,
            "side": "sell", "qty": intent.qty, "type": "market", "status": SUBMITTING, "submitted_at": iso(now),
            "updated_at": iso(now), "filled_qty": 0.0,
        })
        set_intent_status(self.store, intent.id, SUBMITTING, now)

    def _finish_submission(self, intent: OrderIntent, order: BrokerOrder | None, now: datetime) -> None:
        """The broker's answer stored, as ``submit_intent`` does."""
        if order is None:  # the position was gone by then
            self.book.update_order(intent.client_order_id, status="canceled", reason="no position to close")
            set_intent_status(self.store, intent.id, FAILED, now, note="no position to close")
            return
        record_broker_order(self.store, order, now, intent_id=intent.id)
        set_intent_status(self.store, intent.id, REJECTED if order.status == "rejected" else SUBMITTED, now,
                          note=order.reason)

    def _outcome(self, intent: OrderIntent, order: BrokerOrder | None) -> str:
        sym = intent.symbol
        if order is None:
            row = self.book.orders.get(intent.client_order_id)
            if row is not None and row["status"] == SUBMITTING:  # the broker did not answer
                return (f"close of {sym} not confirmed by the broker ({row.get('reason')}); it is retried with the "
                        f"same client id {intent.client_order_id}")
            return f"{sym}: no position at the broker, nothing sent"
        if order.status == "rejected":
            return f"close of {sym} refused by the broker: {order.reason}"
        return f"closing {sym} x{order.qty:g} (order {order.client_order_id}, {order.status})"

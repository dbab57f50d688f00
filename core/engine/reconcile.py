"""Reconciliation (rules §9): before the first trade after a start, the broker is adopted as truth.

Bench events seen but not processed come back from the key store; orders whose submission got no answer are found
or resent; intents saved just before a crash are sent (auto mode); the fills that produced are taken in; unknown open
orders and positions at the broker are adopted, positions it does not hold are dropped, and each change is a
warning the trader sees.
"""

from __future__ import annotations

from datetime import datetime

from core.config import Settings
from core.engine.intents import PENDING, load_intent, record_broker_order, submit_intent
from core.engine.ledger import FillLedger
from core.engine.memory import EngineState
from core.engine.orders import OrderFlow
from core.engine.params import LiveParameters
from core.rules.bracket import bracket_prices
from core.state.store import Store, iso
from core.venues.broker import Broker


class Reconciliation:
    """Adopt the broker's orders and positions before the first trade."""

    def __init__(self, settings: Settings, store: Store, broker: Broker, state: EngineState, live: LiveParameters,
                 orders: OrderFlow, ledger: FillLedger) -> None:
        self.s = settings
        self.store = store
        self.broker = broker
        self.state = state
        self.book = state.book
        self.live = live
        self.orders = orders
        self.ledger = ledger
        self.done = False

    def reconcile(self, now: datetime) -> list[str]:
        """Adopt the broker as truth before the first trade (rules §9); returns what was changed."""
        notes: list[str] = []
        # bench events seen but not yet processed before the stop
        for symbol, event_id in self.state.locks.pending_events(now).items():
            self.state.scheduler.pending_events.setdefault(symbol, event_id)
        self.broker.sync(now)
        self.ledger.ingest_fills(now)
        notes.extend(self.orders.resolve_submitting(now, restart=True))
        self._reconcile_rest(now, notes)
        self.book.load()  # reconciliation rewrote the tables (adopted orders and positions)
        self.done = True
        return notes

    def _reconcile_rest(self, now: datetime, notes: list[str]) -> None:
        # Auto mode: intents saved just before a crash, never sent.
        if self.live.params.auto_mode:
            for row in [r for r in self.book.intents_with_status(PENDING) if r["expires_at"] > iso(now)]:
                if self.orders.unsent_pending(row["id"]):
                    submit_intent(self.store, self.broker, load_intent(row), now)
                    notes.append(f"intent {row['id']} submitted after restart")
        # What was just (re)sent may have filled already: take those fills in before comparing positions, or
        # the position would be adopted (or dropped) here and then changed once more by its fill next tick.
        self.broker.sync(now)
        self.ledger.ingest_fills(now)
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
                    stop, take_profit = bracket_prices(p.avg_entry_price, self.s.stop_loss_pct, self.s.take_profit_pct)
                    self.store.upsert("positions", {
                        "symbol": sym, "qty": p.qty, "avg_price": p.avg_entry_price, "opened_at": iso(now),
                        "stop_price": stop, "take_profit_price": take_profit, "kind": "adopted",
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

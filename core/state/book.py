"""The engine's book in memory: positions, live intents, open orders and start-of-day equity.

The engine reads these on every tick (risk, gates, baskets, stops), so they live
here as plain dicts, loaded from SQLite once at start. Every change is written
through to the same tables on the engine's connection, inside the tick's
transaction, so SQLite stays the journal the UI reads and a restart rebuilds
this book from. Nothing here reads SQLite after ``load``.

An intent is *live* (it holds its symbol and, for a buy, its notional) while its
status is pending, submitting or submitted and its order, if any, has not ended.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from core.state.store import Store, iso

LIVE_INTENT_STATUSES = ("pending", "submitting", "submitted")
FINAL_ORDER_STATUSES = ("filled", "canceled", "rejected", "expired")
# an order the broker may still fill (and whose buy still counts as exposure)
OPEN_ORDER_STATUSES = ("new", "accepted", "pending_new", "partially_filled", "submitting")


class Book:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.positions: dict[str, dict[str, Any]] = {}
        self.intents: dict[str, dict[str, Any]] = {}  # live intents by id
        self.orders: dict[str, dict[str, Any]] = {}  # orders not yet ended, by client id
        self.order_of_intent: dict[str, str] = {}  # intent id -> client id, for the live intents' orders
        self.start_equity: dict[str, float] = {}  # New York date -> start-of-day equity
        self.load()

    def load(self) -> None:
        """(Re)build from SQLite: at start, and after reconciliation rewrote the tables."""
        st = self.store
        # rowid order, as ``SELECT * FROM positions`` returns them (sums over positions add in this order)
        self.positions = {r["symbol"]: r for r in st.query("SELECT * FROM positions WHERE qty > 0")}
        self.orders = {r["client_order_id"]: r for r in st.query(
            f"SELECT * FROM orders WHERE status IN ({_marks(OPEN_ORDER_STATUSES)})", OPEN_ORDER_STATUSES)}
        ended = {r["intent_id"] for r in st.query(
            f"SELECT o.intent_id FROM intents i JOIN orders o ON o.intent_id = i.id WHERE i.status IN "
            f"({_marks(LIVE_INTENT_STATUSES)}) AND o.status IN ({_marks(FINAL_ORDER_STATUSES)})",
            (*LIVE_INTENT_STATUSES, *FINAL_ORDER_STATUSES))}
        self.intents = {r["id"]: r for r in st.query(
            f"SELECT * FROM intents WHERE status IN ({_marks(LIVE_INTENT_STATUSES)}) ORDER BY rowid",
            LIVE_INTENT_STATUSES) if r["id"] not in ended}
        self.order_of_intent = {r["intent_id"]: r["client_order_id"] for r in st.query(
            f"SELECT o.intent_id, o.client_order_id FROM orders o JOIN intents i ON i.id = o.intent_id "
            f"WHERE i.status IN ({_marks(LIVE_INTENT_STATUSES)})", LIVE_INTENT_STATUSES)}
        self.start_equity = {r["date"]: r["start_equity"] for r in st.query("SELECT date, start_equity FROM day_state")}

    # ------------------------------------------------------------ intents
    def add_intent(self, row: dict[str, Any]) -> bool:
        """Insert once; False if this intent id exists already (a repeated tick)."""
        if self.store.insert("intents", row, ignore=True) != 1:
            return False
        if row["status"] in LIVE_INTENT_STATUSES:
            self.intents[row["id"]] = dict(row)
        return True

    def set_intent_status(self, intent_id: str, status: str, now: datetime, *, who: str | None = None,
                          note: str | None = None) -> None:
        self.store.execute(
            "UPDATE intents SET status=?, decided_at=COALESCE(?, decided_at), decided_by=COALESCE(?, decided_by), "
            "note=COALESCE(?, note) WHERE id=?",
            (status, iso(now), who, note, intent_id),
        )
        row = self.intents.get(intent_id)
        if row is None:
            return
        row["status"] = status
        row["decided_at"] = iso(now)
        if who is not None:
            row["decided_by"] = who
        if note is not None:
            row["note"] = note
        if status not in LIVE_INTENT_STATUSES:
            self._end_intent(intent_id)

    def reprice_intent(self, intent_id: str, **changes: Any) -> None:
        """An approved intent re-priced at the moment it is sent (qty, bracket, ``sent_price``): the row then says
        what was sent, its ``price`` still the signal's."""
        cols = ", ".join(f"{k}=?" for k in changes)
        self.store.execute(f"UPDATE intents SET {cols} WHERE id=?", (*changes.values(), intent_id))
        row = self.intents.get(intent_id)
        if row is not None:
            row.update(changes)

    def adopt_intent(self, row: dict[str, Any]) -> None:
        """An intent read back from SQLite (an approval command) that this book did not hold."""
        if row["status"] in LIVE_INTENT_STATUSES and row["id"] not in self.intents:
            self.intents[row["id"]] = dict(row)

    def _end_intent(self, intent_id: str) -> None:
        self.intents.pop(intent_id, None)
        self.order_of_intent.pop(intent_id, None)

    def live_intent_for(self, symbol: str) -> bool:
        return any(r["symbol"] == symbol for r in self.intents.values())

    def intents_with_status(self, status: str) -> list[dict[str, Any]]:
        return [r for r in self.intents.values() if r["status"] == status]

    def unsent_pending(self, intent_id: str) -> bool:
        """Pending and never handed to the order flow (no order row)."""
        row = self.intents.get(intent_id)
        return row is not None and row["status"] == "pending" and intent_id not in self.order_of_intent

    def pending_buys(self) -> list[tuple[float, float]]:
        """(qty, price) of buys not yet filled: waiting intents, and submitted ones whose order is still open."""
        out = []
        for r in self.intents.values():
            if r["side"] != "buy":
                continue
            price = r.get("sent_price") or r["price"]  # what it was sent at, once approved
            if r["status"] in ("pending", "submitting"):
                out.append((r["qty"], price))
            elif r["status"] == "submitted":
                cid = self.order_of_intent.get(r["id"])
                if cid is not None and cid in self.orders:
                    out.append((r["qty"], price))
        return out

    def intent_of_order(self, client_order_id: str) -> dict[str, Any] | None:
        order = self.orders.get(client_order_id)
        if order is not None and order.get("intent_id") in self.intents:
            return self.intents[order["intent_id"]]
        return None

    # ------------------------------------------------------------ orders
    def add_order(self, row: dict[str, Any]) -> None:
        """The order row written before the broker is called (status ``submitting``)."""
        if self.store.insert("orders", row, ignore=True) == 1 or row["client_order_id"] not in self.orders:
            self._track_order(dict(row))

    def upsert_order(self, row: dict[str, Any]) -> None:
        """The broker's view of an order (``record_broker_order``)."""
        self.store.upsert("orders", row)
        merged = {**self.orders.get(row["client_order_id"], {}), **row}
        self._track_order(merged)

    def update_order(self, client_order_id: str, **changes: Any) -> None:
        sets = ", ".join(f"{k}=?" for k in changes)
        self.store.execute(f"UPDATE orders SET {sets} WHERE client_order_id=?", (*changes.values(), client_order_id))
        row = self.orders.get(client_order_id)
        if row is not None:
            self._track_order({**row, **changes})

    def _track_order(self, row: dict[str, Any]) -> None:
        cid, intent_id = row["client_order_id"], row.get("intent_id")
        if intent_id is not None and intent_id in self.intents:
            self.order_of_intent[intent_id] = cid
        if row.get("status") in OPEN_ORDER_STATUSES:
            self.orders[cid] = row
            return
        self.orders.pop(cid, None)
        if row.get("status") in FINAL_ORDER_STATUSES and intent_id is not None:
            self._end_intent(intent_id)  # its order ended: the intent holds nothing any more

    def orders_with_status(self, statuses: Iterable[str]) -> list[dict[str, Any]]:
        wanted = set(statuses)
        return [r for r in self.orders.values() if r["status"] in wanted]

    def intent_id_of_order(self, client_order_id: str) -> str | None:
        row = self.orders.get(client_order_id)
        if row is not None:
            return row.get("intent_id")
        return self.store.scalar("SELECT intent_id FROM orders WHERE client_order_id=?", (client_order_id,))

    # ------------------------------------------------------------ positions
    def holds(self) -> set[str]:
        return set(self.positions)

    def open_position(self, row: dict[str, Any]) -> None:
        self.store.upsert("positions", row)
        if row["qty"] > 0:
            self.positions[row["symbol"]] = {**self.positions.get(row["symbol"], {"fees": None}), **row}

    def update_position(self, symbol: str, **changes: Any) -> None:
        sets = ", ".join(f"{k}=?" for k in changes)
        self.store.execute(f"UPDATE positions SET {sets} WHERE symbol=?", (*changes.values(), symbol))
        if symbol in self.positions:
            self.positions[symbol].update(changes)

    def close_position(self, symbol: str) -> None:
        self.store.execute("DELETE FROM positions WHERE symbol=?", (symbol,))
        self.positions.pop(symbol, None)

    # ------------------------------------------------------------ day state
    def start_of_day(self, day: str) -> float | None:
        return self.start_equity.get(day)

    def record_start_of_day(self, day: str, equity: float, now: datetime) -> None:
        self.store.insert("day_state", {"date": day, "start_equity": equity, "created_at": iso(now)}, ignore=True)
        self.start_equity.setdefault(day, equity)


def _marks(values: tuple[str, ...]) -> str:
    return ",".join("?" * len(values))

"""Order intents, the approval queue and idempotent submission (rules §9).

An intent is written (and committed) before anything is sent. Its
``client_order_id`` is derived from the intent id alone, so a retry, a restart
or a double click reaches the broker with the same id and can never create a
second order.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

from core.rules.bracket import price_increment as price_increment  # re-exported: where intents price their legs
from core.state.store import Store, iso
from core.venues.broker import Broker, BrokerError, BrokerOrder, OrderRequest

log = logging.getLogger(__name__)

PENDING, SUBMITTING, SUBMITTED, REJECTED, EXPIRED, FAILED = (
    "pending", "submitting", "submitted", "rejected", "expired", "failed")


@dataclass(frozen=True)
class OrderIntent:
    id: str
    created_at: datetime
    symbol: str
    side: str
    qty: float
    price: float
    kind: str  # entry | basket | exit
    reason: str
    source: str
    expires_at: datetime
    stop_price: float | None = None
    take_profit_price: float | None = None
    risk_after: float | None = None
    # A manual approval's deadline on the wall clock (POSIX seconds), set by a live app: a human's window counts
    # real seconds whatever SIM_SPEED is. None (replays, auto mode): ``expires_at``, in market time, decides.
    approve_by: float | None = None

    @property
    def client_order_id(self) -> str:
        return client_order_id_for(self.id)

    @property
    def notional(self) -> float:
        return round(self.qty * self.price, 2)

    @property
    def is_exit(self) -> bool:
        return self.kind == "exit"


def make_intent_id(kind: str, symbol: str, side: str, now: datetime) -> str:
    """Deterministic: the same decision at the same tick gets the same id (a re-run tick inserts nothing new)."""
    return f"{kind}-{symbol}-{side}-{now.strftime('%Y%m%dT%H%M%S')}"


def client_order_id_for(intent_id: str) -> str:
    """Short, stable and unique per intent; well under Alpaca's 128-character limit."""
    digest = hashlib.sha256(intent_id.encode()).hexdigest()[:20]
    return f"tb-{digest}"


def new_intent(kind: str, symbol: str, side: str, qty: float, price: float, now: datetime, ttl_s: int, *,
               reason: str, source: str, stop_price: float | None = None, take_profit_price: float | None = None,
               risk_after: float | None = None) -> OrderIntent:
    return OrderIntent(
        id=make_intent_id(kind, symbol, side, now), created_at=now, symbol=symbol, side=side, qty=qty,
        price=price, kind=kind, reason=reason, source=source, expires_at=now + timedelta(seconds=ttl_s),
        stop_price=stop_price, take_profit_price=take_profit_price, risk_after=risk_after,
    )


def save_intent(store: Store, intent: OrderIntent, status: str) -> bool:
    """Insert once; returns False if this intent id already exists (a repeated tick)."""
    row: dict[str, Any] = {f.name: getattr(intent, f.name) for f in fields(intent)}  # asdict deep-copies each
    row["created_at"] = iso(intent.created_at)
    row["expires_at"] = iso(intent.expires_at)
    row["status"] = status
    row["notional"] = intent.notional
    row["client_order_id"] = intent.client_order_id
    return store.book.add_intent(row)


def load_intent(row: dict[str, Any]) -> OrderIntent:
    return OrderIntent(
        id=row["id"], created_at=datetime.fromisoformat(row["created_at"]), symbol=row["symbol"], side=row["side"],
        qty=row["qty"], price=row["price"], kind=row["kind"], reason=row["reason"], source=row["source"],
        expires_at=datetime.fromisoformat(row["expires_at"]), stop_price=row["stop_price"],
        take_profit_price=row["take_profit_price"], risk_after=row["risk_after"], approve_by=row.get("approve_by"),
    )


def intent_expired(expires_at: datetime, approve_by: float | None, now: datetime, wall_now: float | None) -> bool:
    """Has an intent's window closed? A wall-clock deadline (``approve_by``, set for a human's approval in the
    live app) is judged on the wall clock ``wall_now``; otherwise ``expires_at`` on the market clock ``now``.

    Both times are parameters: the caller owns the clocks (a replay passes no wall time and keeps market time).
    """
    if approve_by is not None and wall_now is not None:
        return approve_by <= wall_now
    return expires_at <= now


def row_expired(row: dict[str, Any], now: datetime, wall_now: float | None) -> bool:
    """``intent_expired`` for an intents row (book or SQLite)."""
    return intent_expired(datetime.fromisoformat(row["expires_at"]), row.get("approve_by"), now, wall_now)


def set_intent_status(store: Store, intent_id: str, status: str, now: datetime, *, who: str | None = None,
                      note: str | None = None) -> None:
    store.book.set_intent_status(intent_id, status, now, who=who, note=note)


def submit_intent(store: Store, broker: Broker, intent: OrderIntent, now: datetime) -> BrokerOrder | None:
    """Send an intent to the broker exactly once.

    1. the order row (status ``submitting``) is committed before the call;
    2. the broker call carries the deterministic client_order_id;
    3. the answer is stored. A crash between 1 and 3 is repaired at start-up by
       looking the order up by its client id (``reconcile_submitting``).
    """
    cid = intent.client_order_id
    with store.transaction():
        store.book.add_order({
            "client_order_id": cid, "intent_id": intent.id, "symbol": intent.symbol, "side": intent.side,
            "qty": intent.qty, "type": "market", "status": SUBMITTING, "submitted_at": iso(now),
            "updated_at": iso(now), "filled_qty": 0.0,
        })
        set_intent_status(store, intent.id, SUBMITTING, now)
    store.barrier()  # the decision, its intent and this order row are on disk before the order leaves
    req = OrderRequest(intent.symbol, intent.side, intent.qty, cid,  # type: ignore[arg-type]
                       stop_price=intent.stop_price, take_profit_price=intent.take_profit_price)
    try:
        if intent.is_exit:
            order = broker.close_position(intent.symbol, cid, now)
            if order is None:  # no position: maybe sold by this very order, an earlier copy of it arriving late
                order = broker.get_order_by_client_id(cid)
        else:
            order = broker.submit_order(req, now)
    except BrokerError as e:
        log.warning("submit %s failed, will retry with the same client id: %s", cid, e)
        with store.transaction():
            store.book.update_order(cid, reason=str(e), updated_at=iso(now))
        return None
    with store.transaction():
        if order is None:  # nothing to close
            store.book.update_order(cid, status="canceled", reason="no position to close")
            set_intent_status(store, intent.id, FAILED, now, note="no position to close")
        else:
            record_broker_order(store, order, now, intent_id=intent.id)
            status = REJECTED if order.status == "rejected" else SUBMITTED
            set_intent_status(store, intent.id, status, now, note=order.reason)
    return order


def record_broker_order(store: Store, order: BrokerOrder, now: datetime, *, intent_id: str | None = None) -> None:
    store.book.upsert_order({
        "client_order_id": order.client_order_id, "broker_order_id": order.id,
        "intent_id": intent_id if intent_id is not None else store.book.intent_id_of_order(order.client_order_id),
        "symbol": order.symbol, "side": order.side, "qty": order.qty, "type": order.type, "status": order.status,
        "submitted_at": iso(order.submitted_at), "updated_at": iso(now), "filled_qty": order.filled_qty,
        "filled_avg_price": order.filled_avg_price, "reason": order.reason,
    })

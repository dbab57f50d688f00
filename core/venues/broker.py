"""Broker port: what the engine needs from a broker, whichever it is.

``submit_order`` must be idempotent by ``client_order_id``: submitting the same
id twice returns the first order, never a second one (Alpaca answers 422 and
the adapter fetches by client id; the simulator looks it up).

Closing is idempotent the same way. ``close_position(symbol, client_order_id)``
cancels the symbol's open orders (the bracket legs, which would otherwise fire
after the close or hold the shares) and sells the whole position under that
client id, or returns the order an earlier call made with it; None when there
is no position. ``close_all_positions(client_order_ids, cancel_orders=True)``
does that for every position, after cancelling every other open order (the
orders named in ``client_order_ids``, earlier closes, are kept). Neither uses
Alpaca's DELETE /v2/positions: it cannot carry a client id, so a retry after a
lost answer could not find the first close, and its fill could not be tied to
the request that made it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

Side = Literal["buy", "sell"]
OPEN_STATUSES = ("new", "accepted", "pending_new", "partially_filled", "held")
FINAL_STATUSES = ("filled", "canceled", "rejected", "expired")


class BrokerError(RuntimeError):
    """The broker could not be reached or answered something unusable; the caller may retry."""


@dataclass(frozen=True)
class OrderRequest:
    symbol: str
    side: Side
    qty: float
    client_order_id: str
    type: Literal["market"] = "market"
    stop_price: float | None = None  # bracket stop-loss leg
    take_profit_price: float | None = None  # bracket take-profit leg


@dataclass(frozen=True)
class BrokerOrder:
    id: str
    client_order_id: str
    symbol: str
    side: Side
    qty: float
    type: str
    status: str
    submitted_at: datetime
    filled_qty: float = 0.0
    filled_avg_price: float | None = None
    reason: str | None = None
    parent_id: str | None = None

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES


@dataclass(frozen=True)
class BrokerFill:
    id: str
    order_id: str
    client_order_id: str
    symbol: str
    side: Side
    qty: float
    price: float
    fee: float
    ts: datetime
    leg: str | None = None  # "stop_loss", "take_profit" or None for the order itself


@dataclass(frozen=True)
class Account:
    equity: float
    cash: float
    buying_power: float
    last_equity: float | None = None
    account_number: str = "SIM"


@dataclass(frozen=True)
class BrokerPosition:
    symbol: str
    qty: float
    avg_entry_price: float
    market_price: float


@dataclass(frozen=True)
class PositionClose:
    """One position of a ``close_all_positions`` call (Alpaca answers the same per symbol: symbol, status, order).

    ``order`` is the closing order (new, or the one sent earlier under the same client id); None with a ``message``
    when nothing was sent for that symbol (no position, or no client id given for it)."""

    symbol: str
    order: BrokerOrder | None
    message: str | None = None


class Broker(Protocol):
    name: str

    def submit_order(self, req: OrderRequest, now: datetime) -> BrokerOrder: ...
    def get_order_by_client_id(self, client_order_id: str) -> BrokerOrder | None: ...
    def list_orders(self, *, open_only: bool = True) -> list[BrokerOrder]: ...
    def cancel_order(self, order_id: str, now: datetime) -> None: ...
    def close_position(self, symbol: str, client_order_id: str, now: datetime) -> BrokerOrder | None: ...
    def close_all_positions(self, now: datetime, client_order_ids: Mapping[str, str], *,
                            cancel_orders: bool = True) -> list[PositionClose]: ...
    def get_account(self, now: datetime) -> Account: ...
    def get_positions(self, now: datetime) -> list[BrokerPosition]: ...
    def fills_since(self, cursor: int) -> tuple[list[BrokerFill], int]: ...
    def sync(self, now: datetime) -> None: ...

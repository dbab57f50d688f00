"""Alpaca broker adapter over alpaca-py's ``TradingClient`` (paper by default).

What this adapter decides instead of alpaca-py (see ../shared/notes/alpaca-py.md):
* every HTTP call has a timeout (alpaca-py sets none: a stalled socket would freeze the engine);
* alpaca-py's blocking 3 s retry is switched off; ``AlpacaCaller`` retries 429 (honouring
  Retry-After), 5xx and dropped connections with short backoff, inside a per-call time
  budget and the account-wide request budget (200/min), so a tick stays short;
* every order carries our deterministic ``client_order_id``; a 422 "client_order_id must be
  unique" (a retry after a lost answer) means the order exists: it is fetched, never resent;
* buying-power, wash-trade and not-tradable answers become rejected orders with a reason;
* fills are derived from order polling (``filled_qty`` increments, legs included) and kept
  in SQLite, so each fill reaches the engine exactly once, across restarts too;
* an answer that is not JSON, not the expected shape, or has a field we cannot use (a number
  that is not finite, a fill without price, side or symbol, an order without a side) is a ``BrokerError``, like an
  unreachable broker: the engine trades nothing that tick and asks again.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any, TypeVar

import requests
from alpaca.common.exceptions import APIError
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderClass, OrderSide, QueryOrderStatus, TimeInForce
from alpaca.trading.requests import GetOrdersRequest, MarketOrderRequest, StopLossRequest, TakeProfitRequest

from core.clock import UTC
from core.state.store import Store
from core.venues.broker import (
    Account,
    BrokerError,
    BrokerFill,
    BrokerOrder,
    BrokerPosition,
    OrderRequest,
    PositionClose,
)
from core.venues.limits import SlidingWindowLimit

log = logging.getLogger(__name__)
T = TypeVar("T")

DUPLICATE_CLIENT_ID = 40010001
RETRY_STATUSES = (429, 500, 502, 503, 504)
# answers that are a trading decision by the broker, recorded as a rejected order (not retried)
REJECTION_MARKERS = ("insufficient buying power", "insufficient qty", "wash trade", "not tradable", "halted",
                     "not active", "market is closed", "cannot be sold short", "forbidden")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alpaca_order_state (
  order_id TEXT PRIMARY KEY, client_order_id TEXT, parent_client_order_id TEXT, leg TEXT, symbol TEXT, side TEXT,
  filled_qty REAL DEFAULT 0, filled_avg_price REAL, status TEXT, updated_at TEXT);
CREATE TABLE IF NOT EXISTS alpaca_fills (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE, order_id TEXT, client_order_id TEXT, symbol TEXT,
  side TEXT, qty REAL, price REAL, ts TEXT, leg TEXT);
"""


class RequestBudget(SlidingWindowLimit):
    """Requests per rolling minute on our side (Alpaca's account limit is 200/min, shared by every call)."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(per_minute, 60.0, clock=clock)
        self.per_minute = per_minute


class AlpacaCaller:
    """Runs one alpaca-py call with our timeout, retry and budget policy."""

    def __init__(self, budget: RequestBudget, *, max_retries: int = 2, base_wait_s: float = 0.25,
                 call_budget_s: float = 6.0, sleep: Callable[[float], None] = time.sleep,
                 queue: bool = False) -> None:
        self.budget = budget
        # a research download waits its turn in the request budget; a live call must not wait (a tick would stall)
        self.queue = queue
        self.max_retries = max_retries
        self.base_wait_s = base_wait_s
        self.call_budget_s = call_budget_s
        self.sleep = sleep
        self.retries = 0
        self.failures = 0

    def __call__(self, what: str, fn: Callable[[], T]) -> T:
        started = time.monotonic()
        attempt = 0
        while True:
            if self.queue:
                self.budget.acquire()
            elif not self.budget.try_acquire():
                self.failures += 1
                raise BrokerError(f"{what}: our Alpaca request budget ({self.budget.per_minute}/min) is used up")
            try:
                return fn()
            except APIError as e:
                status = e.status_code
                if status not in RETRY_STATUSES:
                    raise
                wait = self._retry_after(e) if status == 429 else self.base_wait_s * (2 ** attempt)
                problem = f"HTTP {status}"
            except (requests.ConnectionError, requests.Timeout) as e:
                wait, problem = self.base_wait_s * (2 ** attempt), type(e).__name__
            except (ValueError, TypeError) as e:
                # alpaca-py parses the body into its models inside the call: not JSON, a list where an object
                # belongs, a missing or mistyped field. The broker's answer is unusable; retrying now won't help.
                self.failures += 1
                raise BrokerError(f"{what}: unusable answer ({_brief(e)})") from None
            attempt += 1
            if attempt > self.max_retries or time.monotonic() - started + wait > self.call_budget_s:
                self.failures += 1
                raise BrokerError(f"{what}: {problem} after {attempt} attempt(s)")
            self.retries += 1
            log.warning("alpaca %s: %s, retry %d in %.2fs", what, problem, attempt, wait)
            self.sleep(wait)

    def _retry_after(self, e: APIError) -> float:
        try:
            value = float(e.response.headers.get("Retry-After", "1"))  # type: ignore[union-attr]
        except (AttributeError, TypeError, ValueError):
            value = 1.0
        return max(0.0, min(value, self.call_budget_s))


def api_message(e: APIError) -> tuple[int | None, str]:
    """(code, message) of an Alpaca error; data endpoints send no code, some proxies no JSON."""
    try:
        body = json.loads(str(e))
        return body.get("code"), str(body.get("message", ""))
    except (ValueError, TypeError, AttributeError):
        return None, str(e)[:200]


def _brief(e: BaseException) -> str:
    return f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"


def _f(v: Any) -> float:
    x = 0.0 if v is None or v == "" else float(v)
    if not math.isfinite(x):  # "NaN" or "inf" from the broker would poison every sum after it
        raise ValueError(f"not a finite number: {v!r}")
    return x


@contextlib.contextmanager
def _answer(what: str) -> Iterator[None]:
    """Our conversion of a parsed answer: a field it cannot use becomes a BrokerError, never a raw exception."""
    try:
        yield
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        raise BrokerError(f"{what}: unusable answer ({_brief(e)})") from None


def _enum(v: Any) -> str:
    return str(getattr(v, "value", v))


def _side(o: Any) -> str:
    """An order's side as the broker sent it. No side is not a buy: read as one, a sell (a stop exit) would be
    booked the wrong way round, so the answer is refused (``_answer`` makes it a BrokerError)."""
    if o.side is None:
        raise ValueError(f"order {o.id} has no side (buy or sell)")
    side = _enum(o.side)
    if side not in ("buy", "sell"):
        raise ValueError(f"order {o.id}: side {side!r} is neither buy nor sell")
    return side


def make_trading_client(api_key: str, secret_key: str, *, paper: bool, url_override: str | None,
                        timeout_s: float) -> TradingClient:
    client = TradingClient(api_key, secret_key, paper=paper, url_override=url_override)
    client._retry = 0  # our retry policy, not alpaca-py's blocking one
    client._session.request = functools.partial(client._session.request, timeout=timeout_s)  # type: ignore[method-assign]
    return client


class AlpacaBroker:
    name = "alpaca"

    def __init__(self, store: Store, client: TradingClient, *, caller: AlpacaCaller,
                 lookback: timedelta = timedelta(days=3)) -> None:
        self.store = store
        self.client = client
        self.call = caller
        self.lookback = lookback
        store.conn.executescript(_SCHEMA)
        store.commit()
        # answers reused within one tick (same ``now``) until something changes them
        self._account: tuple[datetime, Account] | None = None
        self._positions: tuple[datetime, list[BrokerPosition]] | None = None
        self.account_number = ""

    # ------------------------------------------------------------ conversions
    def _to_order(self, o: Any, *, client_order_id: str | None = None) -> BrokerOrder:
        created = o.submitted_at or o.created_at
        return BrokerOrder(
            id=str(o.id), client_order_id=client_order_id or o.client_order_id, symbol=o.symbol or "",
            side=_side(o),  # type: ignore[arg-type]
            qty=_f(o.qty), type=_enum(o.type or o.order_type or "market"), status=_enum(o.status),
            submitted_at=created if created.tzinfo else created.replace(tzinfo=UTC),
            filled_qty=_f(o.filled_qty), filled_avg_price=_f(o.filled_avg_price) if o.filled_avg_price else None,
        )

    def _rejected(self, req: OrderRequest, now: datetime, reason: str) -> BrokerOrder:
        return BrokerOrder(id=f"rejected-{req.client_order_id}", client_order_id=req.client_order_id,
                           symbol=req.symbol, side=req.side, qty=req.qty, type=req.type, status="rejected",
                           submitted_at=now, reason=reason)

    def _invalidate(self) -> None:
        self._account = None
        self._positions = None

    # ------------------------------------------------------------ orders
    def get_order_by_client_id(self, client_order_id: str) -> BrokerOrder | None:
        try:
            o = self.call("get order", lambda: self.client.get_order_by_client_id(client_order_id))
        except APIError as e:
            if e.status_code == 404:
                return None
            raise BrokerError(f"get order {client_order_id}: {api_message(e)[1]}") from None
        with _answer("get order"):
            return self._to_order(o)

    def list_orders(self, *, open_only: bool = True) -> list[BrokerOrder]:
        req = GetOrdersRequest(status=QueryOrderStatus.OPEN if open_only else QueryOrderStatus.ALL, limit=500,
                               nested=True)
        try:
            orders = self.call("list orders", lambda: self.client.get_orders(filter=req))
        except APIError as e:
            raise BrokerError(f"list orders: {api_message(e)[1]}") from None
        with _answer("list orders"):
            return [self._to_order(o) for o in orders]  # type: ignore[union-attr]

    def submit_order(self, req: OrderRequest, now: datetime) -> BrokerOrder:
        kwargs: dict[str, Any] = {"symbol": req.symbol, "qty": req.qty, "side": OrderSide(req.side),
                                  "time_in_force": TimeInForce.DAY, "client_order_id": req.client_order_id}
        if req.side == "buy" and req.stop_price and req.take_profit_price:
            kwargs.update(order_class=OrderClass.BRACKET,
                          take_profit=TakeProfitRequest(limit_price=round(req.take_profit_price, 2)),
                          stop_loss=StopLossRequest(stop_price=round(req.stop_price, 2)))
        order_req = MarketOrderRequest(**kwargs)
        self._invalidate()
        try:
            o = self.call("submit order", lambda: self.client.submit_order(order_data=order_req))
        except APIError as e:
            code, message = api_message(e)
            if code == DUPLICATE_CLIENT_ID or "client_order_id must be unique" in message:
                # the first attempt reached Alpaca (its answer was lost): that order is ours
                existing = self.get_order_by_client_id(req.client_order_id)
                if existing is None:
                    raise BrokerError(f"duplicate client id {req.client_order_id} but no such order") from None
                return existing
            if e.status_code in (403, 422) or any(m in message.lower() for m in REJECTION_MARKERS):
                log.warning("alpaca rejected %s %s x%s: %s", req.side, req.symbol, req.qty, message)
                return self._rejected(req, now, message or f"HTTP {e.status_code}")
            raise BrokerError(f"submit {req.client_order_id}: HTTP {e.status_code} {message}") from None
        except BrokerError:
            # the request may have reached Alpaca before the connection failed: ask by client id
            try:
                existing = self.get_order_by_client_id(req.client_order_id)
            except BrokerError:
                existing = None
            if existing is not None:
                return existing
            raise
        with _answer("submit order"):
            order = self._to_order(o)
            self._remember(o, req.client_order_id, None, None)
        return order

    def cancel_order(self, order_id: str, now: datetime) -> None:
        self._invalidate()
        try:
            self.call("cancel order", lambda: self.client.cancel_order_by_id(order_id))
        except APIError as e:
            if e.status_code in (404, 422):  # unknown or already final: nothing to cancel
                return
            raise BrokerError(f"cancel {order_id}: {api_message(e)[1]}") from None

    def close_position(self, symbol: str, client_order_id: str, now: datetime) -> BrokerOrder | None:
        """Sell the whole position with our client id (DELETE /positions would not carry one).

        Open orders on the symbol (the bracket legs hold the shares) are canceled first.
        """
        existing = self.get_order_by_client_id(client_order_id)
        if existing is not None:
            return existing
        held = {p.symbol: p for p in self.get_positions(now)}.get(symbol)
        if held is None or held.qty <= 0:
            return None
        for o in self._open_orders_for(symbol):
            self.cancel_order(o, now)
        return self.submit_order(OrderRequest(symbol, "sell", held.qty, client_order_id), now)

    def _open_orders_for(self, symbol: str) -> list[str]:
        return self._open_order_ids(symbols=[symbol])

    def _open_order_ids(self, *, symbols: list[str] | None = None, keep: frozenset[str] = frozenset()) -> list[str]:
        """Ids of the open orders (of ``symbols``, or all), bracket legs included, except those whose client id is
        in ``keep``. Asked flat (nested=False): every leg is its own row with its own status, whereas a nested
        listing may leave out the legs of an entry that has filled (it can filter on the parent's status)."""
        req = GetOrdersRequest(status=QueryOrderStatus.OPEN, limit=500, nested=False, symbols=symbols)
        try:
            orders = self.call("open orders", lambda: self.client.get_orders(filter=req))
        except APIError as e:  # escaped as APIError before: every other call says BrokerError
            raise BrokerError(f"open orders {symbols or 'all'}: {api_message(e)[1]}") from None
        ids: list[str] = []
        with _answer("open orders"):
            for o in orders:  # type: ignore[union-attr]
                if _enum(o.status) in ("new", "accepted", "pending_new", "partially_filled", "held") \
                        and o.client_order_id not in keep:
                    ids.append(str(o.id))
        return ids

    def close_all_positions(self, now: datetime, client_order_ids: Mapping[str, str], *,
                            cancel_orders: bool = True) -> list[PositionClose]:
        """Close every position with the client id given for its symbol (see the port's docstring).

        Not alpaca-py's ``close_all_positions`` (DELETE /v2/positions): its orders carry Alpaca's client ids, so a
        retry could neither find them nor be told apart from a second close. The same steps instead: cancel the
        open orders (keeping earlier closes named in ``client_order_ids``), then one sell per position with our
        client id; a 422 duplicate on that sell means the first one got through, and it is returned."""
        ids = dict(client_order_ids)
        if cancel_orders:
            for oid in self._open_order_ids(keep=frozenset(ids.values())):
                self.cancel_order(oid, now)
        self._invalidate()
        held = {p.symbol: p for p in self.get_positions(now)}
        out: list[PositionClose] = []
        for sym in sorted(set(ids) | set(held)):
            cid = ids.get(sym)
            if cid is None:
                out.append(PositionClose(sym, None, "not closed: no client order id given for it"))
                continue
            existing = self.get_order_by_client_id(cid)  # a repeated call: the close it already sent
            if existing is not None:
                out.append(PositionClose(sym, existing, None))
                continue
            p = held.get(sym)
            if p is None or p.qty <= 0:
                out.append(PositionClose(sym, None, "no position"))
                continue
            if not cancel_orders:  # the legs hold the shares: Alpaca refuses the sell while they are open
                for oid in self._open_orders_for(sym):
                    self.cancel_order(oid, now)
            out.append(PositionClose(sym, self.submit_order(OrderRequest(sym, "sell", p.qty, cid), now), None))
        return out

    # ------------------------------------------------------------ account
    def get_account(self, now: datetime) -> Account:
        if self._account and self._account[0] == now:
            return self._account[1]
        try:
            a = self.call("account", self.client.get_account)
        except APIError as e:
            raise BrokerError(f"account: {api_message(e)[1]}") from None
        with _answer("account"):
            acct = Account(equity=_f(a.equity), cash=_f(a.cash), buying_power=_f(a.buying_power),  # type: ignore[union-attr]
                           last_equity=_f(a.last_equity) if a.last_equity else None,  # type: ignore[union-attr]
                           account_number=a.account_number)  # type: ignore[union-attr]
        self.account_number = acct.account_number
        self._account = (now, acct)
        return acct

    def get_positions(self, now: datetime) -> list[BrokerPosition]:
        if self._positions and self._positions[0] == now:
            return self._positions[1]
        try:
            rows = self.call("positions", self.client.get_all_positions)
        except APIError as e:
            raise BrokerError(f"positions: {api_message(e)[1]}") from None
        with _answer("positions"):
            out = [BrokerPosition(p.symbol, _f(p.qty), _f(p.avg_entry_price),  # type: ignore[union-attr]
                                  _f(p.current_price) or _f(p.avg_entry_price)) for p in rows]  # type: ignore[union-attr]
        self._positions = (now, out)
        return out

    # ------------------------------------------------------------ fills from order polling
    def _remember(self, o: Any, client_order_id: str, parent_cid: str | None, leg: str | None) -> None:
        self.store.execute(
            "INSERT OR IGNORE INTO alpaca_order_state(order_id, client_order_id, parent_client_order_id, leg, symbol,"
            " side, filled_qty, status, updated_at) VALUES (?,?,?,?,?,?,0,?,?)",
            (str(o.id), client_order_id, parent_cid, leg, o.symbol, _enum(o.side), _enum(o.status),
             datetime.now(UTC).isoformat()))

    def sync(self, now: datetime) -> None:
        """Poll recent orders (legs nested) and turn every filled_qty increase into one stored fill."""
        after = now - self.lookback
        req = GetOrdersRequest(status=QueryOrderStatus.ALL, limit=500, nested=True, after=after)
        try:
            orders = self.call("poll orders", lambda: self.client.get_orders(filter=req))
        except APIError as e:
            raise BrokerError(f"poll orders: {api_message(e)[1]}") from None
        changed = False
        with _answer("poll orders"), self.store.transaction():  # one unusable order: nothing of this poll is kept
            for o in orders:  # type: ignore[union-attr]
                changed |= self._track(o, o.client_order_id, None, None)
                for leg in o.legs or []:
                    kind = "take_profit" if _enum(leg.type or leg.order_type) == "limit" else "stop_loss"
                    changed |= self._track(leg, f"{o.client_order_id}-{kind[:2]}", o.client_order_id, kind)
        if changed:
            self._invalidate()

    def _track(self, o: Any, cid: str, parent_cid: str | None, leg: str | None) -> bool:
        oid = str(o.id)
        row = self.store.one("SELECT * FROM alpaca_order_state WHERE order_id=?", (oid,))
        filled, avg = _f(o.filled_qty), _f(o.filled_avg_price)
        status = _enum(o.status)
        if row is None:
            self._remember(o, cid, parent_cid, leg)
            row = {"filled_qty": 0.0, "filled_avg_price": None}
        before, before_avg = row["filled_qty"] or 0.0, row["filled_avg_price"] or 0.0
        new = filled - before
        if new > 1e-9:
            if not avg > 0 or _enum(o.side) not in ("buy", "sell") or not o.symbol:
                raise ValueError(f"order {oid}: filled_qty {filled:g} without a usable price, side or symbol")
            # the price of this increment from the change of the cumulative average
            price = (avg * filled - before_avg * before) / new if before > 0 else avg
            if not price > 0:  # averages that contradict each other (a negative increment price): take the average
                log.warning("alpaca order %s: average %s after %s does not fit the increment; using it", oid, avg,
                            before_avg)
                price = avg
            ts = o.filled_at or o.updated_at
            self.store.execute(
                "INSERT OR IGNORE INTO alpaca_fills(id, order_id, client_order_id, symbol, side, qty, price, ts, leg)"
                " VALUES (?,?,?,?,?,?,?,?,?)",
                (f"{oid}:{filled:g}", oid, cid, o.symbol, _enum(o.side), new, round(price, 6),
                 (ts if ts.tzinfo else ts.replace(tzinfo=UTC)).isoformat(), leg))
        if new > 1e-9 or status != row.get("status"):
            self.store.execute("UPDATE alpaca_order_state SET filled_qty=?, filled_avg_price=?, status=?, "
                               "updated_at=? WHERE order_id=?", (filled, avg or None, status,
                                                                 datetime.now(UTC).isoformat(), oid))
            return True
        return False

    def fills_since(self, cursor: int) -> tuple[list[BrokerFill], int]:
        rows = self.store.query("SELECT * FROM alpaca_fills WHERE seq > ? ORDER BY seq", (cursor,))
        fills = [BrokerFill(id=f"alpaca:{r['id']}", order_id=r["order_id"], client_order_id=r["client_order_id"],
                            symbol=r["symbol"], side=r["side"], qty=r["qty"], price=r["price"], fee=0.0,
                            ts=datetime.fromisoformat(r["ts"]), leg=r["leg"]) for r in rows]
        return fills, (rows[-1]["seq"] if rows else cursor)

    def get_clock(self) -> dict[str, Any]:
        """Alpaca's market clock: is_open, next_open, next_close (tz-aware)."""
        try:
            c = self.call("clock", self.client.get_clock)
        except APIError as e:
            raise BrokerError(f"clock: {api_message(e)[1]}") from None
        with _answer("clock"):
            return {"timestamp": c.timestamp, "is_open": bool(c.is_open), "next_open": c.next_open,  # type: ignore[union-attr]
                    "next_close": c.next_close}  # type: ignore[union-attr]

    # ------------------------------------------------------------ status for the UI
    def describe(self) -> str:
        masked = ("…" + self.account_number[-4:]) if self.account_number else "?"
        return f"account {masked}"

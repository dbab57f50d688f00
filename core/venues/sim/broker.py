"""Simulated broker: fills from the same bars the engine sees.

* Market orders fill at the open of the first bar that opens at or after the
  submission time, moved against the trader by ``slippage_bps``; each fill pays
  a fixed fee per order plus a fee per share (``core.rules.fills.order_fee``).
* Bracket legs (stop-loss, take-profit) become active from the entry's fill
  bar. Per bar: an open beyond a level fills at the open (gap); otherwise a
  touched stop fills at the stop (with slippage), a touched take-profit at its
  limit. When one bar touches both, the stop fills first (the conservative rule).
* Cash account: buying power = cash; a buy that cash cannot cover, or a sell
  of more than is held, is rejected with Alpaca's wording.
* The book (orders with their bracket legs, fills, positions, cash) lives in
  memory and every read is served from there; the ``sim_*`` tables of the
  engine's database are its journal: each change is written through on the
  same connection, inside the same transactions as before, and the tables are
  read only once, when the broker is built. So a restart finds the "remote"
  broker as it was, and a repeated ``client_order_id`` returns the existing
  order instead of creating a second one. Whatever else reads the tables
  (views, tests) sees the same rows as before.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
import operator
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from core.clock import UTC
from core.feed import MarketFeed
from core.rules.fills import (
    LEG_STOP,
    LEG_TAKE_PROFIT,
    affordable,
    first_bracket_hit,
    market_fill_price,
    order_fee,
)
from core.state.store import Store
from core.venues.broker import Account, BrokerFill, BrokerOrder, BrokerPosition, OrderRequest, PositionClose

_NS = uuid.UUID("6f1c2b1e-0000-4000-8000-00000000a1a1")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sim_orders (
  id TEXT PRIMARY KEY, client_order_id TEXT UNIQUE, symbol TEXT, side TEXT, qty REAL, type TEXT,
  stop_price REAL, limit_price REAL, status TEXT, submitted_at REAL, filled_qty REAL DEFAULT 0,
  filled_avg_price REAL, reason TEXT, parent_id TEXT, leg TEXT, active_from REAL, checked_until REAL);
CREATE INDEX IF NOT EXISTS sim_orders_status ON sim_orders(status);
CREATE TABLE IF NOT EXISTS sim_fills (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE, order_id TEXT, client_order_id TEXT, symbol TEXT,
  side TEXT, qty REAL, price REAL, fee REAL, ts REAL, leg TEXT);
CREATE TABLE IF NOT EXISTS sim_account (id INTEGER PRIMARY KEY CHECK (id = 1), cash REAL);
CREATE TABLE IF NOT EXISTS sim_positions (symbol TEXT PRIMARY KEY, qty REAL, avg_price REAL);
"""

_OPEN = ("new", "held")


def _real(v: Any) -> float | None:
    """What a REAL column gives back: ints become floats, NULL stays None (the in-memory book must hold the
    values a read of the row would return, so that every sum stays bit-identical)."""
    return None if v is None else float(v)


@dataclass(slots=True)
class _Order:
    """One ``sim_orders`` row, held in memory."""

    id: str
    client_order_id: str
    symbol: str
    side: str
    qty: float
    type: str
    stop_price: float | None
    limit_price: float | None
    status: str
    submitted_at: float
    filled_qty: float | None = 0.0
    filled_avg_price: float | None = None
    reason: str | None = None
    parent_id: str | None = None
    leg: str | None = None
    active_from: float | None = None
    checked_until: float | None = None

    @classmethod
    def from_row(cls, r: dict[str, Any]) -> _Order:
        return cls(
            id=r["id"], client_order_id=r["client_order_id"], symbol=r["symbol"], side=r["side"], qty=_real(r["qty"]),
            type=r["type"], stop_price=_real(r["stop_price"]), limit_price=_real(r["limit_price"]), status=r["status"],
            submitted_at=_real(r["submitted_at"]), filled_qty=_real(r["filled_qty"]),
            filled_avg_price=_real(r["filled_avg_price"]), reason=r["reason"], parent_id=r["parent_id"], leg=r["leg"],
            active_from=_real(r["active_from"]), checked_until=_real(r["checked_until"]),
        )

    @property
    def is_open(self) -> bool:
        return self.status in _OPEN


_fields_of = operator.attrgetter(*(f.name for f in dataclasses.fields(_Order)))  # an order's values, in field order


class SimBroker:
    name = "sim"

    def __init__(self, store: Store, feed: MarketFeed, *, start_cash: float, slippage_bps: float = 2.0,
                 fee_per_order: float = 0.0, fee_per_share: float = 0.0) -> None:
        self.store = store
        self.feed = feed
        self.slippage = slippage_bps / 10_000.0
        self.fee = fee_per_order
        self.fee_per_share = fee_per_share
        store.conn.executescript(_SCHEMA)
        store.execute("INSERT OR IGNORE INTO sim_account(id, cash) VALUES (1, ?)", (start_cash,))
        store.commit()
        self.submitted_count = 0  # orders created at this broker by this process (duplicate detection in tests)
        self._checked_dirty: dict[str, float] = {}  # leg id -> checked through this bar, not yet written
        store.on_flush(self._write_checked)
        store.on_rollback(self.reload)  # a tick rolled back: the book is what its tables say again
        self.reload()

    # ------------------------------------------------------------ the in-memory book
    def reload(self) -> None:
        """Read the book from the ``sim_*`` tables: once at construction (a restart), or after a tool edited
        the tables behind the broker's back (the fake Alpaca server seeds positions and foreign orders)."""
        st = self.store
        self._checked_dirty = {}
        self._cash_v = float(st.scalar("SELECT cash FROM sim_account WHERE id=1") or 0.0)
        self._pos: dict[str, tuple[float, float]] = {
            r["symbol"]: (_real(r["qty"]), _real(r["avg_price"]))
            for r in st.query("SELECT symbol, qty, avg_price FROM sim_positions")
        }
        self._orders: dict[str, _Order] = {}
        for r in st.query("SELECT * FROM sim_orders ORDER BY submitted_at, id"):
            o = _Order.from_row(r)
            self._orders[o.id] = o
        self._fills: list[BrokerFill] = []
        self._seqs: list[int] = []  # sim_fills.seq of each fill, ascending
        for r in st.query("SELECT * FROM sim_fills ORDER BY seq"):
            self._fills.append(self._fill(r["id"], r["order_id"], r["client_order_id"], r["symbol"], r["side"],
                                          r["qty"], r["price"], r["fee"], r["ts"], r["leg"]))
            self._seqs.append(int(r["seq"]))
        self._index()

    def _index(self) -> None:
        """Look-ups derived from ``_orders``: by client id, the open ones, the legs of each parent."""
        self._by_cid = {o.client_order_id: o for o in self._orders.values()}
        self._open = {o.id: o for o in self._orders.values() if o.is_open}
        self._legs: dict[str, list[_Order]] = {}
        for o in self._orders.values():
            if o.parent_id is not None:
                self._legs.setdefault(o.parent_id, []).append(o)

    def _add(self, o: _Order) -> None:
        self._orders[o.id] = o
        self._by_cid[o.client_order_id] = o
        if o.is_open:
            self._open[o.id] = o
        if o.parent_id is not None:
            self._legs.setdefault(o.parent_id, []).append(o)

    def _set_status(self, o: _Order, status: str, reason: str | None = None) -> None:
        o.status = status
        if reason is not None:
            o.reason = reason
        if o.is_open:
            self._open[o.id] = o
        else:
            self._open.pop(o.id, None)

    @staticmethod
    def _fill(fid: str, order_id: str, cid: str, symbol: str, side: Any, qty: Any, price: Any, fee: Any, ts: Any,
              leg: str | None) -> BrokerFill:
        return BrokerFill(fid, order_id, cid, symbol, side, float(qty), float(price), float(fee),
                          datetime.fromtimestamp(float(ts), UTC), leg)

    @contextmanager
    def _write(self) -> Iterator[Any]:
        """A store transaction, committed at once even inside an engine tick (this broker stands for a remote one:
        what it did stays done whatever the engine's tick does next; batch replays wait for their flush); if it
        fails, the book goes back to what the rows still say.

        Only open orders (and their legs) change; orders and fills are only appended: the snapshot is small."""
        n_orders, n_fills = len(self._orders), len(self._fills)
        cash, pos = self._cash_v, dict(self._pos)
        saved = {o.id: _fields_of(o) for o in self._open.values()}
        for o in list(self._open.values()):  # a rejected entry also rejects legs that were closed already
            saved.update((leg.id, _fields_of(leg)) for leg in self._legs.get(o.id, ()))
        try:
            with self.store.transaction() as conn:
                yield conn
            self.store.barrier()
        except BaseException:
            self._cash_v, self._pos = cash, pos
            del self._fills[n_fills:], self._seqs[n_fills:]
            for oid in list(self._orders)[n_orders:]:
                del self._orders[oid]
            for oid, fields in saved.items():
                self._orders[oid] = _Order(*fields)
            self._index()
            raise

    # ------------------------------------------------------------ orders
    def _order(self, o: _Order | None) -> BrokerOrder | None:
        if o is None:
            return None
        return BrokerOrder(
            id=o.id, client_order_id=o.client_order_id, symbol=o.symbol, side=o.side,
            qty=o.qty, type=o.type, status="new" if o.status == "held" else o.status,
            submitted_at=datetime.fromtimestamp(o.submitted_at, UTC), filled_qty=o.filled_qty or 0.0,
            filled_avg_price=o.filled_avg_price, reason=o.reason, parent_id=o.parent_id,
        )

    def get_order_by_client_id(self, client_order_id: str) -> BrokerOrder | None:
        return self._order(self._by_cid.get(client_order_id))

    def list_orders(self, *, open_only: bool = True) -> list[BrokerOrder]:
        pool = self._open.values() if open_only else self._orders.values()
        rows = sorted((o for o in pool if o.parent_id is None), key=lambda o: (o.submitted_at, o.id))
        return [self._order(o) for o in rows]

    def submit_order(self, req: OrderRequest, now: datetime) -> BrokerOrder:
        existing = self.get_order_by_client_id(req.client_order_id)
        if existing is not None:
            return existing  # idempotent: the same client id is the same order
        oid = str(uuid.uuid5(_NS, req.client_order_id))
        t = now.timestamp()
        status, reason = "new", None
        price = self.feed.price(req.symbol, now)
        if req.qty <= 0 or req.qty != int(req.qty):
            status, reason = "rejected", "qty must be a positive whole number"
        elif price is None:
            status, reason = "rejected", f"asset {req.symbol} is not tradable (no price)"
        elif req.side == "buy" and not affordable(req.qty * price * (1 + self.slippage), self._fee(req.qty),
                                                  self._cash()):
            status, reason = "rejected", "insufficient buying power"
        elif req.side == "sell" and req.qty > self._held(req.symbol) + 1e-9:
            status, reason = "rejected", "insufficient qty available for order"
        with self._write() as conn:
            conn.execute(
                "INSERT INTO sim_orders(id, client_order_id, symbol, side, qty, type, status, submitted_at, reason)"
                " VALUES (?,?,?,?,?,?,?,?,?)",
                (oid, req.client_order_id, req.symbol, req.side, req.qty, req.type, status, t, reason),
            )
            order = _Order(oid, req.client_order_id, req.symbol, req.side, _real(req.qty), req.type, None, None,
                           status, t, reason=reason)
            self._add(order)
            if status == "new" and req.side == "buy":
                for leg, typ, stop, limit in (
                    ("stop_loss", "stop", req.stop_price, None),
                    ("take_profit", "limit", None, req.take_profit_price),
                ):
                    if stop is None and limit is None:
                        continue
                    conn.execute(
                        "INSERT INTO sim_orders(id, client_order_id, symbol, side, qty, type, stop_price, limit_price,"
                        " status, submitted_at, parent_id, leg) VALUES (?,?,?,?,?,?,?,?, 'held', ?,?,?)",
                        (f"{oid}-{leg}", f"{req.client_order_id}-{leg[:2]}", req.symbol, "sell", req.qty, typ,
                         stop, limit, t, oid, leg),
                    )
                    self._add(_Order(f"{oid}-{leg}", f"{req.client_order_id}-{leg[:2]}", req.symbol, "sell",
                                     _real(req.qty), typ, _real(stop), _real(limit), "held", t,
                                     parent_id=oid, leg=leg))
        self.submitted_count += 1
        return self._order(order)

    def cancel_order(self, order_id: str, now: datetime) -> None:
        with self._write() as conn:
            conn.execute(
                "UPDATE sim_orders SET status='canceled', reason='canceled by user' "
                "WHERE (id=? OR parent_id=?) AND status IN ('new','held')",
                (order_id, order_id),
            )
            for o in [o for o in self._open.values() if order_id in (o.id, o.parent_id)]:
                self._set_status(o, "canceled", "canceled by user")

    def close_position(self, symbol: str, client_order_id: str, now: datetime) -> BrokerOrder | None:
        existing = self.get_order_by_client_id(client_order_id)
        if existing is not None:
            return existing
        qty = self._held(symbol)
        if qty <= 0:
            return None
        with self._write() as conn:  # closing cancels the protective legs first, as Alpaca requires
            conn.execute(
                "UPDATE sim_orders SET status='canceled', reason='position closed' "
                "WHERE symbol=? AND parent_id IS NOT NULL AND status IN ('new','held')",
                (symbol,),
            )
            for o in [o for o in self._open.values() if o.symbol == symbol and o.parent_id is not None]:
                self._set_status(o, "canceled", "position closed")
        return self.submit_order(OrderRequest(symbol, "sell", qty, client_order_id), now)

    def close_all_positions(self, now: datetime, client_order_ids: Mapping[str, str], *,
                            cancel_orders: bool = True) -> list[PositionClose]:
        """Close every position, each with the client id given for its symbol (see the port's docstring).

        ``cancel_orders``: every open order is cancelled first (entries not yet filled, bracket legs, foreign
        orders), except the orders named in ``client_order_ids``: a repeated call keeps the closes it sent."""
        keep = set(client_order_ids.values())
        if cancel_orders:
            doomed = [o for o in self._open.values() if o.client_order_id not in keep
                      and (o.parent_id is None or self._orders[o.parent_id].client_order_id not in keep)]
            if doomed:
                with self._write() as conn:
                    conn.executemany("UPDATE sim_orders SET status='canceled', reason='close all positions' "
                                     "WHERE id=?", [(o.id,) for o in doomed])
                    for o in doomed:
                        self._set_status(o, "canceled", "close all positions")
        out = []
        for sym in sorted(set(client_order_ids) | {s for s, (q, _) in self._pos.items() if q > 0}):
            cid = client_order_ids.get(sym)
            if cid is None:
                out.append(PositionClose(sym, None, "not closed: no client order id given for it"))
                continue
            order = self.close_position(sym, cid, now)
            out.append(PositionClose(sym, order, None if order is not None else "no position"))
        return out

    # ------------------------------------------------------------ account
    def _cash(self) -> float:
        return self._cash_v

    def _held(self, symbol: str) -> float:
        pos = self._pos.get(symbol)
        return float(pos[0] or 0.0) if pos else 0.0

    def get_positions(self, now: datetime) -> list[BrokerPosition]:
        out = []
        for sym, (qty, avg) in sorted(self._pos.items()):
            if qty > 0:
                px = self.feed.price(sym, now) or avg
                out.append(BrokerPosition(sym, qty, avg, px))
        return out

    def get_account(self, now: datetime) -> Account:
        cash = self._cash()
        equity = cash + sum(p.qty * p.market_price for p in self.get_positions(now))
        return Account(equity=equity, cash=cash, buying_power=cash, last_equity=None)

    def fills_since(self, cursor: int) -> tuple[list[BrokerFill], int]:
        i = bisect.bisect_right(self._seqs, cursor)
        return self._fills[i:], (self._seqs[-1] if i < len(self._seqs) else cursor)

    # ------------------------------------------------------------ matching
    def sync(self, now: datetime) -> None:
        """Fill whatever the bars up to ``now`` say has filled."""
        if not self._open or not self._may_fill(now):
            return
        orders = sorted(self._open.values(), key=lambda o: (o.submitted_at, o.id))
        with self._write():
            for o in orders:
                if o.parent_id is None and o.type == "market" and o.status == "new":
                    self._fill_market(o, now)
            self._check_legs(now)

    def _may_fill(self, now: datetime) -> bool:
        """False when only bracket legs are open and no bar has closed since they were last checked: the
        common tick while positions are held costs no matching at all."""
        last = self.feed.last_index(now)
        newest = float(self.feed.ts[last]) if last >= 0 else -math.inf
        for o in self._open.values():
            if o.parent_id is None or o.status != "new":
                return True  # an entry or exit to fill (at a bar that has opened), or legs still held back
            if max(o.active_from or 0.0, (o.checked_until or 0.0) + 1) <= newest:
                return True
        return False

    def _write_checked(self) -> None:
        """The legs' "checked until" marks, written with the store's next commit (they only save work: a
        restart that finds an older mark checks those bars again and finds them untouched)."""
        if self._checked_dirty:
            self.store.conn.executemany("UPDATE sim_orders SET checked_until=? WHERE id=?",
                                        sorted((c, oid) for oid, c in self._checked_dirty.items()))
            self._checked_dirty = {}

    def _fill_market(self, o: _Order, now: datetime) -> None:
        nxt = self.feed.next_open(o.symbol, datetime.fromtimestamp(o.submitted_at, UTC), now)
        if nxt is None:
            return
        bar_ts, open_px = nxt
        price = market_fill_price(open_px, o.side == "buy", self.slippage)
        if o.side == "buy" and not affordable(o.qty * price, self._fee(o.qty), self._cash()):
            self._reject(o, "insufficient buying power")
            return
        if o.side == "sell" and o.qty > self._held(o.symbol) + 1e-9:
            self._reject(o, "insufficient qty available for order")
            return
        self._apply_fill(o, o.qty, price, bar_ts, None)
        # Entry filled: its legs wake up from this bar on.
        self.store.execute(
            "UPDATE sim_orders SET status='new', active_from=?, checked_until=? WHERE parent_id=? AND status='held'",
            (bar_ts, bar_ts - 1, o.id),
        )
        for leg in self._legs.get(o.id, ()):
            if leg.status == "held":
                leg.active_from, leg.checked_until = float(bar_ts), float(bar_ts - 1)
                self._set_status(leg, "new")

    def _reject(self, o: _Order, reason: str) -> None:
        self.store.execute(
            "UPDATE sim_orders SET status='rejected', reason=? WHERE id=? OR parent_id=?", (reason, o.id, o.id)
        )
        for x in (o, *self._legs.get(o.id, ())):
            self._set_status(x, "rejected", reason)

    def _fee(self, qty: float) -> float:
        return order_fee(qty, self.fee, self.fee_per_share)

    def _apply_fill(self, o: _Order, qty: float, price: float, ts: float, leg: str | None) -> None:
        fee = self._fee(qty)
        sign = 1 if o.side == "buy" else -1
        amount = sign * qty * price + fee
        self.store.execute("UPDATE sim_account SET cash = cash - ? WHERE id=1", (amount,))
        self._cash_v = self._cash_v - amount  # the same double subtraction SQLite did
        held, avg = self._pos.get(o.symbol, (0.0, 0.0))
        new_qty = held + sign * qty
        new_avg = (held * avg + qty * price) / new_qty if sign > 0 and new_qty > 0 else avg
        if new_qty <= 1e-9:
            self.store.execute("DELETE FROM sim_positions WHERE symbol=?", (o.symbol,))
            self._pos.pop(o.symbol, None)
        else:
            self.store.execute(
                "INSERT INTO sim_positions(symbol, qty, avg_price) VALUES (?,?,?) ON CONFLICT(symbol) "
                "DO UPDATE SET qty=excluded.qty, avg_price=excluded.avg_price", (o.symbol, new_qty, new_avg))
            self._pos[o.symbol] = (float(new_qty), float(new_avg))
        self.store.execute(
            "UPDATE sim_orders SET status='filled', filled_qty=?, filled_avg_price=? WHERE id=?",
            (qty, price, o.id),
        )
        o.filled_qty, o.filled_avg_price = float(qty), float(price)
        self._set_status(o, "filled")
        cur = self.store.execute(
            "INSERT INTO sim_fills(id, order_id, client_order_id, symbol, side, qty, price, fee, ts, leg)"
            " VALUES (?,?,?,?,?,?,?,?,?,?)",
            (f"{o.id}-fill", o.id, o.client_order_id, o.symbol, o.side, qty, price, fee, ts, leg),
        )
        self._fills.append(self._fill(f"{o.id}-fill", o.id, o.client_order_id, o.symbol, o.side, qty, price, fee,
                                      ts, leg))
        self._seqs.append(int(cur.lastrowid))

    def _check_legs(self, now: datetime) -> None:
        legs = sorted((o for o in self._open.values() if o.parent_id is not None and o.status == "new"),
                      key=lambda o: (o.parent_id, o.leg))
        by_parent: dict[str, dict[str, _Order]] = {}
        for leg in legs:
            by_parent.setdefault(leg.parent_id, {})[leg.leg] = leg
        for parent_id, pair in by_parent.items():
            any_leg = next(iter(pair.values()))
            start = int(max(any_leg.active_from, any_leg.checked_until + 1))
            ts, op, hi, lo, _ = self.feed.bars_between(any_leg.symbol, start, now)
            if len(ts) == 0:
                continue
            stop = pair.get("stop_loss")
            tp = pair.get("take_profit")
            i, leg, px = first_bracket_hit(op, hi, lo, stop.stop_price if stop else math.nan,
                                           tp.limit_price if tp else math.nan, self.slippage)
            if leg == LEG_STOP:
                self._fill_leg(stop, pair, px, ts[i])
            elif leg == LEG_TAKE_PROFIT:
                self._fill_leg(tp, pair, px, ts[i])
            else:
                for x in self._legs.get(parent_id, ()):
                    if x.status == "new":
                        x.checked_until = float(int(ts[-1]))
                        self._checked_dirty[x.id] = x.checked_until

    def _fill_leg(self, leg: _Order, pair: dict[str, _Order], price: float, ts: float) -> None:
        qty = min(leg.qty, self._held(leg.symbol))
        if qty <= 0:
            self.store.execute("UPDATE sim_orders SET status='canceled', reason='no position' WHERE parent_id=?",
                               (leg.parent_id,))
            for x in self._legs.get(leg.parent_id, ()):
                self._set_status(x, "canceled", "no position")
            return
        self._apply_fill(leg, qty, float(price), float(ts), leg.leg)
        for other in pair.values():  # one-cancels-other
            if other.id != leg.id:
                self.store.execute(
                    "UPDATE sim_orders SET status='canceled', reason='oco' WHERE id=? AND status='new'",
                    (other.id,),
                )
                if other.status == "new":
                    self._set_status(other, "canceled", "oco")

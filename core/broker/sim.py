"""Simulated broker: fills from the same bars the engine sees.

* Market orders fill at the open of the first bar that opens at or after the
  submission time, moved against the trader by ``slippage_bps``, plus a fixed
  fee per order.
* Bracket legs (stop-loss, take-profit) become active from the entry's fill
  bar. Per bar: an open beyond a level fills at the open (gap); otherwise a
  touched stop fills at the stop (with slippage), a touched take-profit at its
  limit. When one bar touches both, the stop fills first (the conservative rule).
* Cash account: buying power = cash; a buy that cash cannot cover, or a sell
  of more than is held, is rejected with Alpaca's wording.
* State lives in ``sim_*`` tables of the engine's database, so a restart finds
  the "remote" broker as it was, and a repeated ``client_order_id`` returns the
  existing order instead of creating a second one.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import numpy as np

from core.broker import Account, BrokerFill, BrokerOrder, BrokerPosition, OrderRequest
from core.clock import UTC
from core.feed import MarketFeed
from core.store import Store

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


class SimBroker:
    name = "sim"

    def __init__(self, store: Store, feed: MarketFeed, *, start_cash: float, slippage_bps: float = 2.0,
                 fee_per_order: float = 0.0) -> None:
        self.store = store
        self.feed = feed
        self.slippage = slippage_bps / 10_000.0
        self.fee = fee_per_order
        store.conn.executescript(_SCHEMA)
        store.execute("INSERT OR IGNORE INTO sim_account(id, cash) VALUES (1, ?)", (start_cash,))
        store.commit()
        self.submitted_count = 0  # orders created at this broker by this process (duplicate detection in tests)

    # ------------------------------------------------------------ orders
    def _order(self, row: dict[str, Any] | None) -> BrokerOrder | None:
        if row is None:
            return None
        return BrokerOrder(
            id=row["id"], client_order_id=row["client_order_id"], symbol=row["symbol"], side=row["side"],
            qty=row["qty"], type=row["type"], status="new" if row["status"] == "held" else row["status"],
            submitted_at=datetime.fromtimestamp(row["submitted_at"], UTC), filled_qty=row["filled_qty"] or 0.0,
            filled_avg_price=row["filled_avg_price"], reason=row["reason"], parent_id=row["parent_id"],
        )

    def get_order_by_client_id(self, client_order_id: str) -> BrokerOrder | None:
        return self._order(self.store.one("SELECT * FROM sim_orders WHERE client_order_id=?", (client_order_id,)))

    def list_orders(self, *, open_only: bool = True) -> list[BrokerOrder]:
        sql = "SELECT * FROM sim_orders WHERE parent_id IS NULL"
        if open_only:
            sql += " AND status IN ('new', 'held')"
        return [o for o in (self._order(r) for r in self.store.query(sql + " ORDER BY submitted_at, id")) if o]

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
        elif req.side == "buy" and req.qty * price * (1 + self.slippage) + self.fee > self._cash() + 1e-6:
            status, reason = "rejected", "insufficient buying power"
        elif req.side == "sell" and req.qty > self._held(req.symbol) + 1e-9:
            status, reason = "rejected", "insufficient qty available for order"
        with self.store.transaction() as conn:
            conn.execute(
                "INSERT INTO sim_orders(id, client_order_id, symbol, side, qty, type, status, submitted_at, reason)"
                " VALUES (?,?,?,?,?,?,?,?,?)",
                (oid, req.client_order_id, req.symbol, req.side, req.qty, req.type, status, t, reason),
            )
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
        self.submitted_count += 1
        order = self.get_order_by_client_id(req.client_order_id)
        assert order is not None
        return order

    def cancel_order(self, order_id: str, now: datetime) -> None:
        with self.store.transaction() as conn:
            conn.execute(
                "UPDATE sim_orders SET status='canceled', reason='canceled by user' "
                "WHERE (id=? OR parent_id=?) AND status IN ('new','held')",
                (order_id, order_id),
            )

    def close_position(self, symbol: str, client_order_id: str, now: datetime) -> BrokerOrder | None:
        existing = self.get_order_by_client_id(client_order_id)
        if existing is not None:
            return existing
        qty = self._held(symbol)
        if qty <= 0:
            return None
        with self.store.transaction() as conn:  # closing cancels the protective legs first, as Alpaca requires
            conn.execute(
                "UPDATE sim_orders SET status='canceled', reason='position closed' "
                "WHERE symbol=? AND parent_id IS NOT NULL AND status IN ('new','held')",
                (symbol,),
            )
        return self.submit_order(OrderRequest(symbol, "sell", qty, client_order_id), now)

    # ------------------------------------------------------------ account
    def _cash(self) -> float:
        return float(self.store.scalar("SELECT cash FROM sim_account WHERE id=1") or 0.0)

    def _held(self, symbol: str) -> float:
        return float(self.store.scalar("SELECT qty FROM sim_positions WHERE symbol=?", (symbol,)) or 0.0)

    def get_positions(self, now: datetime) -> list[BrokerPosition]:
        out = []
        for r in self.store.query("SELECT * FROM sim_positions WHERE qty > 0 ORDER BY symbol"):
            px = self.feed.price(r["symbol"], now) or r["avg_price"]
            out.append(BrokerPosition(r["symbol"], r["qty"], r["avg_price"], px))
        return out

    def get_account(self, now: datetime) -> Account:
        cash = self._cash()
        equity = cash + sum(p.qty * p.market_price for p in self.get_positions(now))
        return Account(equity=equity, cash=cash, buying_power=cash, last_equity=None)

    def fills_since(self, cursor: int) -> tuple[list[BrokerFill], int]:
        rows = self.store.query("SELECT * FROM sim_fills WHERE seq > ? ORDER BY seq", (cursor,))
        fills = [
            BrokerFill(r["id"], r["order_id"], r["client_order_id"], r["symbol"], r["side"], r["qty"], r["price"],
                       r["fee"], datetime.fromtimestamp(r["ts"], UTC), r["leg"])
            for r in rows
        ]
        return fills, (rows[-1]["seq"] if rows else cursor)

    # ------------------------------------------------------------ matching
    def sync(self, now: datetime) -> None:
        """Fill whatever the bars up to ``now`` say has filled."""
        orders = self.store.query(
            "SELECT * FROM sim_orders WHERE status IN ('new','held') ORDER BY submitted_at, id"
        )
        if not orders:
            return
        with self.store.transaction():
            for o in orders:
                if o["parent_id"] is None and o["type"] == "market" and o["status"] == "new":
                    self._fill_market(o, now)
            self._check_legs(now)

    def _fill_market(self, o: dict[str, Any], now: datetime) -> None:
        nxt = self.feed.next_open(o["symbol"], datetime.fromtimestamp(o["submitted_at"], UTC), now)
        if nxt is None:
            return
        bar_ts, open_px = nxt
        price = open_px * (1 + self.slippage) if o["side"] == "buy" else open_px * (1 - self.slippage)
        if o["side"] == "buy" and o["qty"] * price + self.fee > self._cash() + 1e-6:
            self._reject(o, "insufficient buying power")
            return
        if o["side"] == "sell" and o["qty"] > self._held(o["symbol"]) + 1e-9:
            self._reject(o, "insufficient qty available for order")
            return
        self._apply_fill(o, o["qty"], price, bar_ts, None)
        # Entry filled: its legs wake up from this bar on.
        self.store.execute(
            "UPDATE sim_orders SET status='new', active_from=?, checked_until=? WHERE parent_id=? AND status='held'",
            (bar_ts, bar_ts - 1, o["id"]),
        )

    def _reject(self, o: dict[str, Any], reason: str) -> None:
        self.store.execute(
            "UPDATE sim_orders SET status='rejected', reason=? WHERE id=? OR parent_id=?", (reason, o["id"], o["id"])
        )

    def _apply_fill(self, o: dict[str, Any], qty: float, price: float, ts: float, leg: str | None) -> None:
        fee = self.fee
        sign = 1 if o["side"] == "buy" else -1
        self.store.execute("UPDATE sim_account SET cash = cash - ? WHERE id=1", (sign * qty * price + fee,))
        pos = self.store.one("SELECT qty, avg_price FROM sim_positions WHERE symbol=?", (o["symbol"],))
        held, avg = (pos["qty"], pos["avg_price"]) if pos else (0.0, 0.0)
        new_qty = held + sign * qty
        new_avg = (held * avg + qty * price) / new_qty if sign > 0 and new_qty > 0 else avg
        if new_qty <= 1e-9:
            self.store.execute("DELETE FROM sim_positions WHERE symbol=?", (o["symbol"],))
        else:
            self.store.execute(
                "INSERT INTO sim_positions(symbol, qty, avg_price) VALUES (?,?,?) ON CONFLICT(symbol) "
                "DO UPDATE SET qty=excluded.qty, avg_price=excluded.avg_price", (o["symbol"], new_qty, new_avg))
        self.store.execute(
            "UPDATE sim_orders SET status='filled', filled_qty=?, filled_avg_price=? WHERE id=?",
            (qty, price, o["id"]),
        )
        self.store.execute(
            "INSERT INTO sim_fills(id, order_id, client_order_id, symbol, side, qty, price, fee, ts, leg)"
            " VALUES (?,?,?,?,?,?,?,?,?,?)",
            (f"{o['id']}-fill", o["id"], o["client_order_id"], o["symbol"], o["side"], qty, price, fee, ts, leg),
        )

    def _check_legs(self, now: datetime) -> None:
        legs = self.store.query(
            "SELECT * FROM sim_orders WHERE parent_id IS NOT NULL AND status='new' ORDER BY parent_id, leg"
        )
        by_parent: dict[str, dict[str, dict[str, Any]]] = {}
        for leg in legs:
            by_parent.setdefault(leg["parent_id"], {})[leg["leg"]] = leg
        for pair in by_parent.values():
            any_leg = next(iter(pair.values()))
            start = int(max(any_leg["active_from"], any_leg["checked_until"] + 1))
            ts, op, hi, lo, _ = self.feed.bars_between(any_leg["symbol"], start, now)
            if len(ts) == 0:
                continue
            stop = pair.get("stop_loss")
            tp = pair.get("take_profit")
            hit_s = np.flatnonzero(lo <= stop["stop_price"]) if stop else np.empty(0, dtype=int)
            hit_t = np.flatnonzero(hi >= tp["limit_price"]) if tp else np.empty(0, dtype=int)
            i_s = int(hit_s[0]) if len(hit_s) else None
            i_t = int(hit_t[0]) if len(hit_t) else None
            if i_s is not None and (i_t is None or i_s <= i_t):
                level = stop["stop_price"]
                px = (op[i_s] if op[i_s] <= level else level) * (1 - self.slippage)
                self._fill_leg(stop, pair, px, ts[i_s])
            elif i_t is not None:
                level = tp["limit_price"]
                px = op[i_t] if op[i_t] >= level else level
                self._fill_leg(tp, pair, px, ts[i_t])
            else:
                self.store.execute(
                    "UPDATE sim_orders SET checked_until=? WHERE parent_id=? AND status='new'",
                    (int(ts[-1]), any_leg["parent_id"]),
                )

    def _fill_leg(self, leg: dict[str, Any], pair: dict[str, dict[str, Any]], price: float, ts: float) -> None:
        qty = min(leg["qty"], self._held(leg["symbol"]))
        if qty <= 0:
            self.store.execute("UPDATE sim_orders SET status='canceled', reason='no position' WHERE parent_id=?",
                               (leg["parent_id"],))
            return
        self._apply_fill(leg, qty, float(price), float(ts), leg["leg"])
        for other in pair.values():  # one-cancels-other
            if other["id"] != leg["id"]:
                self.store.execute(
                    "UPDATE sim_orders SET status='canceled', reason='oco' WHERE id=? AND status='new'",
                    (other["id"],),
                )

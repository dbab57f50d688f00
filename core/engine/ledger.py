"""The fill ledger: broker fills taken in once each (by fill id, after a cursor), applied to positions, closed into
trades with P&L, fees and MAE/MFE; and the stop checks of positions that carry no bracket legs at the broker.

A fill is the only thing that changes a position (apart from reconciliation, which adopts the broker's).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from core.clock import is_rth
from core.config import Settings
from core.engine.intents import PENDING, new_intent, save_intent, submit_intent
from core.engine.memory import EngineState
from core.feed import MarketFeed
from core.metrics.display import money
from core.rules.bracket import bracket_prices, stop_hit, take_profit_hit
from core.state.store import Store, iso
from core.venues.broker import Broker

log = logging.getLogger(__name__)


class FillLedger:
    """Fills -> positions -> trades; excursions (MAE/MFE) and the stop checks of adopted positions."""

    def __init__(self, settings: Settings, store: Store, broker: Broker, feed: MarketFeed, state: EngineState) -> None:
        self.s = settings
        self.store = store
        self.broker = broker
        self.feed = feed
        self.state = state
        self.book = state.book

    def ingest_fills(self, now: datetime) -> int:
        cursor = self.state.fill_cursor
        fills, new_cursor = self.broker.fills_since(cursor)
        if not fills and new_cursor == cursor:
            return 0
        n = 0
        for f in fills:
            with self.store.transaction():
                if self.store.insert("fills", {
                    "id": f.id, "client_order_id": f.client_order_id, "symbol": f.symbol, "side": f.side,
                    "qty": f.qty, "price": f.price, "fee": f.fee, "ts": iso(f.ts),
                }, ignore=True) == 1:
                    self._apply_fill_to_positions(f.symbol, f.side, f.qty, f.price, f.fee, f.ts, f.client_order_id,
                                                  f.leg)
                    n += 1
        with self.store.transaction():
            if new_cursor != cursor:
                self.store.set_meta("fill_cursor", str(new_cursor))
        self.state.fill_cursor = new_cursor  # once written (a failed write leaves it, and the fills, to the next tick)
        return n

    def _apply_fill_to_positions(self, symbol: str, side: str, qty: float, price: float, fee: float, ts: datetime,
                                 cid: str, leg: str | None) -> None:
        book = self.book
        pos = book.positions.get(symbol)
        intent = None if leg else self._intent_of_order(cid)  # a bracket leg's fill needs only the leg's name
        if side == "buy":
            if pos is None:
                stop, take_profit = bracket_prices(price, self.s.stop_loss_pct, self.s.take_profit_pct)
                book.open_position({
                    "symbol": symbol, "qty": qty, "avg_price": price, "opened_at": iso(ts),
                    "stop_price": (intent or {}).get("stop_price") or stop,
                    "take_profit_price": (intent or {}).get("take_profit_price") or take_profit,
                    "kind": (intent or {}).get("kind", "entry"), "high": price, "low": price,
                    "intent_id": (intent or {}).get("id"),
                })
            else:
                total = pos["qty"] + qty
                avg = (pos["qty"] * pos["avg_price"] + qty * price) / total
                book.update_position(symbol, qty=total, avg_price=avg)
            book.update_position(symbol, fees=(book.positions[symbol].get("fees") or 0) + fee)
            self.store.notify("info", f"filled: bought {qty:g} {symbol} @ {price:,.2f}"
                              + (f" ({intent['kind']}: {intent['reason']})" if intent else ""), ts)
            return
        if pos is None:
            log.warning("sell fill for %s with no recorded position", symbol)
            return
        self.update_excursions(symbol, ts + timedelta(seconds=60))  # through the bar the exit filled in
        entry = pos["avg_price"]
        close_qty = min(qty, pos["qty"])
        # the entry fees in proportion to the shares this fill closes: a position sold in parts charges each
        # entry fee once, whatever the parts (cash paid every fee once: the trades' P&L sums to the cash change)
        held_fees = pos.get("fees") or 0.0
        entry_fees = held_fees * close_qty / pos["qty"] if pos["qty"] > 0 else held_fees
        fees = fee + entry_fees
        pnl = (price - entry) * close_qty - fees
        reason = leg or ((intent or {}).get("reason") or "exit")
        self.store.insert("trades", {
            "symbol": symbol, "kind": pos["kind"], "qty": close_qty, "entry_ts": pos["opened_at"],
            "entry_price": entry, "exit_ts": iso(ts), "exit_price": price, "pnl": round(pnl, 6),
            "ret": round((price / entry - 1.0), 8), "exit_reason": reason,
            "mae": round(min(0.0, pos["low"] / entry - 1.0), 8), "mfe": round(max(0.0, pos["high"] / entry - 1.0), 8),
            "fees": fees,
        })
        label = {"stop_loss": "stop-loss exit", "take_profit": "take-profit exit", "manual_close": "manual close",
                 "flatten": "flatten all"}.get(reason, "exit")
        self.store.notify("warning" if reason == "stop_loss" else "info",
                          f"{label}: sold {close_qty:g} {symbol} @ {price:,.2f}, P&L {money(pnl)}", ts)
        if pnl < 0:  # no quick re-entry after a loss
            self.state.locks.start_symbol_cooldown(symbol, self.s.protection_symbol_cooldown_s, ts)
        left = pos["qty"] - close_qty
        if left <= 1e-9:
            book.close_position(symbol)
        else:
            book.update_position(symbol, qty=left, fees=held_fees - entry_fees)

    def _intent_of_order(self, cid: str) -> dict[str, Any] | None:
        """The intent behind an order: from the book while it is live, else (an order that ended before its
        fill was read, an adopted one) from the journal."""
        return self.book.intent_of_order(cid) or self.store.one(
            "SELECT i.* FROM intents i JOIN orders o ON o.intent_id=i.id WHERE o.client_order_id=?", (cid,))

    def update_excursions(self, symbol: str, now: datetime) -> None:
        """Track the high/low since entry for MAE/MFE."""
        pos = self.book.positions.get(symbol)
        if pos is None:
            return
        start = int(datetime.fromisoformat(pos["opened_at"]).timestamp())
        _, _, hi, lo, _ = self.feed.bars_between(symbol, start, now)
        # a missing bar (NaN) says nothing about the excursion: it must not hide the bars around it
        hi, lo = hi[~np.isnan(hi)], lo[~np.isnan(lo)]
        if len(hi) or len(lo):
            self.book.update_position(symbol, high=max(pos["high"], float(hi.max())) if len(hi) else pos["high"],
                                      low=min(pos["low"], float(lo.min())) if len(lo) else pos["low"])

    def maybe_check_stops(self, now: datetime) -> None:
        t = now.timestamp()
        last = self.state.last_stop_check
        if last is not None and t - last < self.s.stop_check_interval_s:
            return
        self.state.last_stop_check = t
        self.check_stops(now)

    def check_stops(self, now: datetime) -> list[str]:
        """Update MAE/MFE; exit positions that have no protective legs at the broker and crossed a level."""
        exits = []
        for pos in list(self.book.positions.values()):
            sym = pos["symbol"]
            self.update_excursions(sym, now)
            if pos["kind"] != "adopted" or not is_rth(now):
                continue  # our own entries carry bracket legs at the broker
            px = self.feed.price(sym, now)
            if px is None:
                continue
            why = "stop_loss" if stop_hit(px, pos["stop_price"]) else (
                "take_profit" if take_profit_hit(px, pos["take_profit_price"]) else None)
            if why and not self.book.live_intent_for(sym):
                intent = new_intent("exit", sym, "sell", pos["qty"], px, now, self.s.intent_ttl_s,
                                    reason=why, source="stop_check")
                with self.store.transaction():
                    save_intent(self.store, intent, PENDING)
                submit_intent(self.store, self.broker, intent, now)  # stops run even when paused or manual
                exits.append(sym)
        return exits

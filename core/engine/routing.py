"""Basket routing (rules §8): individual stocks are evidence, short exposure is a basket trade.

``BasketRouter`` (``core.rules.baskets``) says whether a basket fires from its members' latest scores; this module
checks what may still block the inverse ETF's entry (pause, protections, holdings, conflicts, a pending intent,
risk, the ETF lock), sizes it and queues the intent, and records every evaluation with what blocked it.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from core.config import LiveParams, Settings
from core.engine.intents import new_intent, price_increment
from core.feed import MarketFeed
from core.rules.baskets import BasketRouter
from core.rules.protections import Protections
from core.rules.risk import RiskManager
from core.state.book import Book
from core.state.kv import KVStore
from core.universe import Universe
from core.venues.broker import Broker

if TYPE_CHECKING:
    from core.engine.tick import TickReport


class BasketRouting:
    """Turn a firing basket into an inverse-ETF intent, or record what blocked it.

    Other parts it calls: ``_queue_intent``, ``_live_intent_for`` (orders); ``account_state`` (memory);
    ``entry_risk_check`` (decide).
    """

    s: Settings
    universe: Universe
    baskets: BasketRouter
    book: Book
    broker: Broker
    feed: MarketFeed
    kv: KVStore
    params: LiveParams
    protections: Protections
    risk: RiskManager
    latest_scores: dict[str, tuple[float, float]]

    def _route_baskets(self, now: datetime, rep: TickReport) -> None:
        for basket in self.universe.baskets:
            ev = self.baskets.evaluate(basket, self.latest_scores, now)
            blocked, intent_id = None, None
            if ev.fires:
                held = self.book.holds()
                held |= {p.symbol for p in self.broker.get_positions(now)}  # holdings made outside the app too
                etf = basket.inverse_etf
                conflicts = self.baskets.conflicts_held(basket, held)
                state = self.account_state(now)
                price = self.feed.price(etf, now)
                if self.params.paused:
                    blocked = "paused"
                elif (rule := self.protections.entries_paused_by(now)) is not None:
                    blocked = f"protection:{rule}"
                elif etf in held:
                    blocked = "etf_held"
                elif conflicts:
                    blocked = "conflict:" + ",".join(conflicts)
                elif self._live_intent_for(etf):
                    blocked = "intent_pending"
                else:
                    ok, reason = self.entry_risk_check(state, price, now)
                    if not ok:
                        blocked = reason
                    elif not self.kv.set_nx(f"etf_lock:{etf}", basket.name, self.s.etf_lock_s, now):
                        blocked = "etf_lock"
                if blocked is None and price is not None:
                    size = self.risk.size_for(state, price)
                    intent = new_intent(
                        "basket", etf, "buy", size.qty, price, now, self.s.intent_ttl_s,
                        reason=(f"{basket.name}: {ev.n_signals} members, {ev.negative_ratio:.0%} negative, "
                                f"mean {ev.mean_score:+.3f}, {ev.consecutive} ticks; ETF score "
                                f"{ev.inverted_score:+.3f}"),
                        source=f"basket:{basket.name}", stop_price=price_increment(price * (1 - self.s.stop_loss_pct)),
                        take_profit_price=price_increment(price * (1 + self.s.take_profit_pct)),
                        risk_after=round(self.risk.risk_after_fill(state, size.qty, price), 6),
                    )
                    intent_id = intent.id
                    self._queue_intent(intent, now, rep)
            self.baskets.save(ev, now, blocked_by=blocked, intent_id=intent_id)

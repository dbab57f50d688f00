"""Basket routing (rules §8): individual stocks are evidence, short exposure is a basket trade.

Each tick, every basket is evaluated over its members' latest scores (``core.rules.baskets``: the figures, the
condition, the streak); a basket that fires goes through the same entry blocks as a long (``gates
.check_entry_blocks``: pause, protections, a losing exit's cooldown, the ETF held, a conflicting holding, a pending
intent), then risk and the ETF lock, and becomes an inverse-ETF intent. Every evaluation is recorded with what
blocked it.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np

from core.clock import trading_date
from core.config import Settings
from core.engine.account import Accounts, EntryRisk, RiskManager
from core.engine.intents import new_intent
from core.engine.memory import EngineState
from core.engine.orders import OrderFlow
from core.engine.params import LiveParameters
from core.engine.report import TickReport
from core.feed import MarketFeed
from core.rules import baskets as rules
from core.rules import gates
from core.rules.params import (
    P_BASKET_CONSECUTIVE_TICKS,
    P_BASKET_MEAN_SCORE,
    P_BASKET_MIN_SIGNALS,
    P_BASKET_NEG_RATIO,
    P_BASKET_SIGNAL_MAX_AGE_S,
    P_BASKET_STREAK_GAP_S,
    P_ETF_LOCK_S,
    P_PAUSED,
)
from core.rules.reasons import CONFLICT, ETF_LOCK, OK, PROTECTION, reason_text
from core.state.baskets import BasketEvaluation
from core.universe import Basket, Universe
from core.venues.broker import Broker


class BasketRouting:
    """Turn a firing basket into an inverse-ETF intent, or record what blocked it."""

    def __init__(self, settings: Settings, universe: Universe, feed: MarketFeed, broker: Broker, state: EngineState,
                 live: LiveParameters, orders: OrderFlow, accounts: Accounts, risk: RiskManager,
                 entry_risk: EntryRisk) -> None:
        self.s = settings
        self.universe = universe
        self.feed = feed
        self.broker = broker
        self.state = state
        self.live = live
        self.orders = orders
        self.accounts = accounts
        self.risk = risk
        self.entry_risk = entry_risk

    def evaluate(self, basket: Basket, now: datetime) -> BasketEvaluation:
        """The basket's figures over its members' latest scores, its condition and its streak (kept in memory)."""
        p, latest, t = self.live.p, self.state.latest_scores, now.timestamp()
        members = basket.members
        score_ts = np.array([latest[m][0] if m in latest else np.nan for m in members], dtype=np.float64)
        scores = np.array([latest[m][1] if m in latest else np.nan for m in members], dtype=np.float64)
        counted = rules.basket_members(score_ts, scores, t, p[P_BASKET_SIGNAL_MAX_AGE_S])
        n, ratio, mean = rules.basket_figures(scores, counted)
        cond = rules.basket_condition(n, ratio, mean, p[P_BASKET_MIN_SIGNALS], p[P_BASKET_NEG_RATIO],
                                      p[P_BASKET_MEAN_SCORE])
        streaks = self.state.baskets
        prev, prev_t, prev_session = streaks.previous(basket.name)
        session = trading_date(now).toordinal()
        streak = rules.basket_streak(prev, prev_t, prev_session, cond, t, session, p[P_BASKET_STREAK_GAP_S])
        streaks.update(basket.name, streak, t, session)
        used = {m: latest[m][1] for i, m in enumerate(members) if counted[i]}
        return BasketEvaluation(basket.name, n, ratio, mean, cond, streak, used,
                                rules.basket_fires(cond, streak, p[P_BASKET_CONSECUTIVE_TICKS]))

    def route(self, now: datetime, rep: TickReport) -> None:
        for basket in self.universe.baskets:
            self.route_basket(basket, now, rep)

    def route_basket(self, basket: Basket, now: datetime, rep: TickReport) -> None:
        """Evaluate one basket and, when it fires, make its inverse-ETF intent or record what blocked it."""
        p, locks = self.live.p, self.state.locks
        ev = self.evaluate(basket, now)
        blocked, intent_id = None, None
        if ev.fires:
            held = self.state.book.holds()
            held |= {pos.symbol for pos in self.broker.get_positions(now)}  # holdings made outside the app too
            etf = basket.inverse_etf
            conflicts = sorted(held & set(basket.conflicts))
            account = self.accounts.account_state(now)
            price = self.feed.price(etf, now)
            protection = self.state.protections.entries_paused_by(now)
            symbol_cooldown = gates.lock_holds(locks.symbol_cooldown_until(etf, now), now.timestamp())
            code = gates.check_entry_blocks(bool(p[P_PAUSED]), protection is not None, symbol_cooldown,
                                            etf in held, True, bool(conflicts), self.orders.live_intent_for(etf))
            if code != OK:
                blocked = reason_text(code, protection if code == PROTECTION else
                                      ",".join(conflicts) if code == CONFLICT else "")
            else:
                ok, reason = self.entry_risk.check(account, price, now)
                if not ok:
                    blocked = reason
                elif (code := gates.check_etf_lock(locks.etf_lock_until(etf, now), now.timestamp())) != OK or \
                        not locks.take_etf_lock(etf, basket.name, p[P_ETF_LOCK_S], now):
                    blocked = reason_text(ETF_LOCK)
            if blocked is None and price is not None:
                order = self.risk.price_entry(account, price)
                intent = new_intent(
                    "basket", etf, "buy", order.qty, price, now, self.s.intent_ttl_s,
                    reason=(f"{basket.name}: {ev.n_signals} members, {ev.negative_ratio:.0%} negative, "
                            f"mean {ev.mean_score:+.3f}, {ev.consecutive} ticks; ETF score "
                            f"{ev.inverted_score:+.3f}"),
                    source=f"basket:{basket.name}", stop_price=order.stop_price,
                    take_profit_price=order.take_profit_price, risk_after=order.risk_after,
                )
                intent_id = intent.id
                self.orders.queue_intent(intent, now, rep)
        self.state.baskets.save(ev, now, blocked_by=blocked, intent_id=intent_id)

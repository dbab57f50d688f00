"""The account as the risk rules see it (rules §7): positions at their marks, pending buys, equity, and the
answers of ``core.rules.risk`` for it.

``AccountState`` is a snapshot built by ``Accounts.account_state`` from the broker's account, the book and the feed;
``RiskManager`` turns it into the numbers the rules take and their reason codes back into the stored text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from core.clock import trading_date
from core.rules import risk as rules
from core.rules.bracket import bracket_prices
from core.rules.params import (
    P_DAILY_LOSS_LIMIT,
    P_MAX_CONCURRENT_RISK,
    P_MAX_POSITIONS,
    P_STOP_LOSS_PCT,
    P_TAKE_PROFIT_PCT,
    param_vector,
)
from core.rules.reasons import OK, RISK_DAILY_LOSS, RISK_MAX_POSITIONS, reason_text

if TYPE_CHECKING:
    from core.config import Settings
    from core.feed import MarketFeed
    from core.state.book import Book
    from core.state.protections import Protections
    from core.venues.broker import Broker

DAILY_LOSS_REASON = reason_text(RISK_DAILY_LOSS)


@dataclass(frozen=True)
class PositionRisk:
    symbol: str
    qty: float
    avg_price: float
    market_price: float
    stop_price: float | None = None

    @property
    def market_value(self) -> float:
        return self.qty * self.market_price

    def stop_risk(self, stop_loss_pct: float) -> float:
        """Money lost if the stop fills: the position's share of concurrent risk."""
        return rules.position_stop_risk(self.qty, self.market_price, self.stop_price or 0.0, self.avg_price,
                                        stop_loss_pct)


@dataclass(frozen=True)
class AccountState:
    equity: float
    cash: float
    buying_power: float
    start_of_day_equity: float
    positions: tuple[PositionRisk, ...] = field(default_factory=tuple)
    pending_notional: float = 0.0  # submitted, unfilled buys
    pending_count: int = 0
    pending_approvals: int = 0  # of ``pending_count``: buys waiting for Approve (manual mode)

    @property
    def exposure(self) -> float:
        return sum(p.market_value for p in self.positions) + self.pending_notional

    def holds(self, symbol: str) -> bool:
        return any(p.symbol == symbol and p.qty > 0 for p in self.positions)


@dataclass(frozen=True)
class SizeResult:
    qty: int
    raw_qty: int
    capped_by: str | None  # None, "slot", "exposure", "buying_power"


@dataclass(frozen=True)
class EntryOrder:
    """A buy priced at one price: what an entry or basket intent holds, and what an approval sends."""
    price: float
    qty: int
    capped_by: str | None
    stop_price: float
    take_profit_price: float
    risk_after: float


class RiskManager:
    """``core.rules.risk`` over an ``AccountState``: the settings' parameter vector is built once."""

    def __init__(self, settings: Settings) -> None:
        self.s = settings  # the engine hands every part new settings by this attribute
        self._p: tuple[Settings, list[float]] | None = None

    @property
    def p(self) -> list[float]:
        """The rules' vector of ``s``, built once per settings object."""
        if self._p is None or self._p[0] is not self.s:
            self._p = (self.s, param_vector(self.s).tolist())
        return self._p[1]

    # ------------------------------------------------------------ figures
    def current_risk(self, state: AccountState) -> float:
        total = 0.0
        for pos in state.positions:
            total += pos.stop_risk(self.p[P_STOP_LOSS_PCT])
        return rules.concurrent_risk(state.equity, total)

    def daily_loss(self, state: AccountState) -> float:
        return rules.daily_loss(state.equity, state.start_of_day_equity)

    def size_for(self, state: AccountState, price: float) -> SizeResult:
        qty, raw, capped = rules.size_position(self.p, state.equity, price, state.exposure, state.buying_power)
        return SizeResult(qty, raw, rules.CAPPED_NAMES[capped])

    def price_entry(self, state: AccountState, price: float) -> EntryOrder:
        """A buy at ``price``: the size rule's shares for the account, the bracket from that price and the
        concurrent risk after it fills. The one place an intent is priced (when it is made, and again when it is
        sent after an approval)."""
        size = self.size_for(state, price)
        stop, take_profit = bracket_prices(price, self.p[P_STOP_LOSS_PCT], self.p[P_TAKE_PROFIT_PCT])
        return EntryOrder(price, size.qty, size.capped_by, stop, take_profit,
                          round(self.risk_after_fill(state, size.qty, price), 6))

    def full_size(self, state: AccountState, price: float) -> int:
        return rules.full_position_size(self.p, state.equity, price)

    def reason(self, code: int, state: AccountState) -> str:
        """A risk code as stored: a max-positions refusal says how many of the taken slots are intents waiting for
        Approve (a trader who approves or rejects them frees the slots)."""
        n = state.pending_approvals
        if code == RISK_MAX_POSITIONS and n > 0:
            return reason_text(code, f"{n} pending approval{'' if n == 1 else 's'}")
        return reason_text(code)

    # ------------------------------------------------------------ checks
    def check_signal_risk_feasibility(self, state: AccountState, price: float | None) -> tuple[bool, str]:
        """Could a new entry be opened now? (ok, reason); reason is "ok" or a ``risk_*`` code."""
        code = rules.check_signal_risk_feasibility(
            self.p, state.equity, state.start_of_day_equity, len(state.positions), state.pending_count,
            math.nan if price is None else price, state.exposure, state.buying_power, self.current_risk(state))
        return code == OK, self.reason(code, state)

    def should_allow_trade(self, state: AccountState, symbol: str, side: str, qty: float, price: float,
                           *, is_exit: bool = False) -> tuple[bool, str]:
        """Final check before an order leaves (also on Approve): the intent's own size against today's state."""
        code = rules.should_allow_trade(
            self.p, is_exit or side == "sell", qty, price, state.holds(symbol), state.equity,
            state.start_of_day_equity, len(state.positions), state.pending_count, state.exposure,
            state.buying_power, self.current_risk(state))
        return code == OK, self.reason(code, state)

    def risk_after_fill(self, state: AccountState, qty: float, price: float) -> float:
        return rules.risk_after_fill(self.current_risk(state), qty, price, self.p[P_STOP_LOSS_PCT], state.equity)

    # ------------------------------------------------------------ summary
    def portfolio_summary(self, state: AccountState) -> dict[str, Any]:
        p = self.p
        current = self.current_risk(state)
        max_risk = self.s.max_concurrent_risk
        loss = self.daily_loss(state)
        status = rules.risk_status(current, p[P_MAX_CONCURRENT_RISK], loss, p[P_DAILY_LOSS_LIMIT],
                                   len(state.positions), p[P_MAX_POSITIONS])
        return {
            "current_risk_pct": round(current, 6),
            "max_risk_pct": max_risk,
            "risk_status": rules.STATUS_NAMES[status],
            "remaining_capacity": round(max(0.0, max_risk - current), 6),
            "daily_loss_limit": self.s.daily_loss_limit,
            "daily_loss_pct": round(loss, 6),
            "risk_per_trade": self.s.risk_per_trade,
            "max_positions": self.s.max_positions,
            "open_positions": len(state.positions),
            "stop_loss_pct": self.s.stop_loss_pct,
            "exposure_pct": round(state.exposure / state.equity, 6) if state.equity > 0 else 0.0,
            "max_exposure": self.s.max_exposure,
            "equity": round(state.equity, 2),
        }


class EntryRisk:
    """``check_signal_risk_feasibility`` for a new entry, recording the day's first daily-loss refusal as the
    ``daily_loss`` protection (whichever path meets the halt first: a decision, a basket, an approval)."""

    def __init__(self, risk: RiskManager, protections: Protections) -> None:
        self.risk = risk
        self.protections = protections

    def check(self, state: AccountState, price: float | None, now: datetime) -> tuple[bool, str]:
        ok, reason = self.risk.check_signal_risk_feasibility(state, price)
        self.note_halt(reason, state, now)
        return ok, reason

    def note_halt(self, reason: str, state: AccountState, now: datetime) -> None:
        if reason == DAILY_LOSS_REASON:
            self.protections.record_daily_loss_halt(now, self.risk.daily_loss(state), self.risk.s.daily_loss_limit)


class Accounts:
    """Builds the ``AccountState`` every risk decision takes, from the broker's account, the book and the feed."""

    def __init__(self, broker: Broker, feed: MarketFeed, book: Book) -> None:
        self.broker = broker
        self.feed = feed
        self.book = book
        self._memo: tuple[Any, AccountState] | None = None

    def account_state(self, now: datetime) -> AccountState:
        acct = self.broker.get_account(now)
        positions = []
        for r in self.book.positions.values():
            px = self.feed.price(r["symbol"], now) or r["avg_price"]
            positions.append(PositionRisk(r["symbol"], r["qty"], r["avg_price"], px, r["stop_price"]))
        live = self.book.pending_buys()  # buys not yet filled: waiting intents, submitted ones still open
        sod = self.book.start_of_day(trading_date(now).isoformat())
        return AccountState(
            equity=acct.equity, cash=acct.cash, buying_power=acct.buying_power,
            start_of_day_equity=sod if sod is not None else acct.equity, positions=tuple(positions),
            pending_notional=sum(q * p for q, p in live), pending_count=len(live),
            pending_approvals=sum(1 for r in self.book.intents_with_status("pending") if r["side"] == "buy"),
        )

    def for_tick(self, now: datetime, n_intents: int) -> AccountState:
        """``account_state`` for this tick's decisions, built when the first ticker passes its cutoff and again
        after each intent this tick queued (a waiting buy counts against the limits)."""
        key = (now, n_intents)
        memo = self._memo
        if memo is not None and memo[0] == key:
            return memo[1]
        state = self.account_state(now)
        self._memo = (key, state)
        return state

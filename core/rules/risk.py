"""Risk manager (rules §7): sizing, feasibility, approval re-checks, summary, Kelly.

Sizing: qty = (risk_per_trade x equity) / (entry x stop_loss_pct), then capped so
one position is at most max_exposure x equity / min_slots ($10,000 -> $2,667),
by the exposure still free, and by buying power. Exits never need permission.

A full position is what the risk rule and the slot give (the smaller of the two), before the exposure and
buying-power caps. An entry that those caps cut below ``min_position_fraction`` of a full position is not
opened (``risk_size_too_small``): the last few dollars of exposure buy a token position (one share) that
carries fees and a slot but no weight.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from core.config import Settings

_EPS = 1e-9
DAILY_LOSS_REASON = "risk_daily_loss"  # the suppression reason of the daily-loss halt (rules §7)
MAX_POSITIONS_REASON = "risk_max_positions"
SIZE_TOO_SMALL_REASON = "risk_size_too_small"


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
        stop = self.stop_price if self.stop_price else self.avg_price * (1 - stop_loss_pct)
        return max(0.0, self.qty * (self.market_price - stop))


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


def calculate_position_size(
    equity: float,
    price: float,
    *,
    risk_per_trade: float,
    stop_loss_pct: float,
    max_exposure: float,
    min_slots: int,
    current_exposure: float = 0.0,
    buying_power: float | None = None,
) -> SizeResult:
    """Whole shares to buy at ``price``; see the module docstring for the rule."""
    if equity <= 0 or price <= 0:
        return SizeResult(0, 0, "equity" if equity <= 0 else "price")
    stop_distance = price * stop_loss_pct
    raw = math.floor((risk_per_trade * equity) / stop_distance + _EPS)
    limits = {
        "slot": max_exposure * equity / min_slots,
        "exposure": max(0.0, max_exposure * equity - current_exposure),
        "buying_power": float("inf") if buying_power is None else max(0.0, buying_power),
    }
    qty, capped = raw, None
    for name, notional in limits.items():
        if math.isinf(notional):
            continue
        cap = math.floor(notional / price + _EPS)
        if cap < qty:
            qty, capped = cap, name
    return SizeResult(max(0, qty), raw, capped)


class RiskManager:
    def __init__(self, settings: Settings) -> None:
        self.s = settings

    # ------------------------------------------------------------ figures
    def current_risk(self, state: AccountState) -> float:
        if state.equity <= 0:
            return 1.0
        return sum(p.stop_risk(self.s.stop_loss_pct) for p in state.positions) / state.equity

    def daily_loss(self, state: AccountState) -> float:
        if state.start_of_day_equity <= 0:
            return 0.0
        return max(0.0, (state.start_of_day_equity - state.equity) / state.start_of_day_equity)

    def size_for(self, state: AccountState, price: float) -> SizeResult:
        return calculate_position_size(
            state.equity, price, risk_per_trade=self.s.risk_per_trade, stop_loss_pct=self.s.stop_loss_pct,
            max_exposure=self.s.max_exposure, min_slots=self.s.min_slots, current_exposure=state.exposure,
            buying_power=state.buying_power,
        )

    def full_size(self, state: AccountState, price: float) -> int:
        """Shares of a full position at ``price``: the risk rule capped by the slot, with nothing held or pending
        and buying power unlimited (the module docstring)."""
        return calculate_position_size(
            state.equity, price, risk_per_trade=self.s.risk_per_trade, stop_loss_pct=self.s.stop_loss_pct,
            max_exposure=self.s.max_exposure, min_slots=self.s.min_slots,
        ).qty

    def max_positions_reason(self, state: AccountState) -> str:
        """``risk_max_positions``, saying how many of the taken slots are intents waiting for Approve: a trader who
        approves or rejects them frees the slots."""
        n = state.pending_approvals
        if n <= 0:
            return MAX_POSITIONS_REASON
        return f"{MAX_POSITIONS_REASON} ({n} pending approval{'' if n == 1 else 's'})"

    # ------------------------------------------------------------ checks
    def check_signal_risk_feasibility(self, state: AccountState, price: float | None) -> tuple[bool, str]:
        """Could a new entry be opened now? (ok, reason); reason is "ok" or a ``risk_*`` code."""
        if self.daily_loss(state) >= self.s.daily_loss_limit - _EPS:
            return False, DAILY_LOSS_REASON
        if len(state.positions) + state.pending_count >= self.s.max_positions:
            return False, self.max_positions_reason(state)
        if price is None or price <= 0:
            return False, "risk_no_price"
        size = self.size_for(state, price)
        if size.qty <= 0:
            return False, "risk_exposure" if size.capped_by in ("exposure", "slot") else "risk_buying_power"
        if size.qty < self.s.min_position_fraction * self.full_size(state, price) - _EPS:
            return False, SIZE_TOO_SMALL_REASON
        new_risk = size.qty * price * self.s.stop_loss_pct / state.equity
        if self.current_risk(state) + new_risk > self.s.max_concurrent_risk + _EPS:
            return False, "risk_concurrent"
        return True, "ok"

    def should_allow_trade(self, state: AccountState, symbol: str, side: str, qty: float, price: float,
                           *, is_exit: bool = False) -> tuple[bool, str]:
        """Final check before an order leaves (also on Approve): the intent's own size against today's state."""
        if is_exit or side == "sell":
            return True, "ok"
        if qty <= 0:
            return False, "risk_size_zero"
        if state.holds(symbol):
            return False, "risk_already_held"
        if self.daily_loss(state) >= self.s.daily_loss_limit - _EPS:
            return False, DAILY_LOSS_REASON
        if len(state.positions) + state.pending_count >= self.s.max_positions:
            return False, self.max_positions_reason(state)
        notional = qty * price
        if notional > self.s.max_exposure * state.equity / self.s.min_slots + price:
            return False, "risk_slot"
        if state.exposure + notional > self.s.max_exposure * state.equity + _EPS:
            return False, "risk_exposure"
        if notional > state.buying_power + _EPS:
            return False, "risk_buying_power"
        new_risk = notional * self.s.stop_loss_pct / state.equity
        if self.current_risk(state) + new_risk > self.s.max_concurrent_risk + _EPS:
            return False, "risk_concurrent"
        return True, "ok"

    def risk_after_fill(self, state: AccountState, qty: float, price: float) -> float:
        return self.current_risk(state) + qty * price * self.s.stop_loss_pct / max(state.equity, _EPS)

    # ------------------------------------------------------------ summary
    def portfolio_summary(self, state: AccountState) -> dict[str, Any]:
        current = self.current_risk(state)
        max_risk = self.s.max_concurrent_risk
        loss = self.daily_loss(state)
        blocked = (
            loss >= self.s.daily_loss_limit - _EPS
            or current >= max_risk - _EPS
            or len(state.positions) >= self.s.max_positions
        )
        status = "blocked" if blocked else ("caution" if current >= 0.75 * max_risk else "safe")
        return {
            "current_risk_pct": round(current, 6),
            "max_risk_pct": max_risk,
            "risk_status": status,
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


def kelly_fraction(win_rate: float, payoff_ratio: float) -> float:
    """f* = W - (1 - W) / R."""
    if payoff_ratio <= 0:
        return -1.0 if win_rate < 1 else 1.0
    return win_rate - (1 - win_rate) / payoff_ratio


def kelly_margin(win_rate: float, payoff_ratio: float, risk_per_trade: float) -> dict[str, Any]:
    """Kelly fraction and its safety margin over the risk actually taken (warn below 1x)."""
    f = kelly_fraction(win_rate, payoff_ratio)
    margin = f / risk_per_trade if risk_per_trade > 0 else float("inf")
    return {"kelly_fraction": f, "margin": margin, "warning": margin < 1.0}

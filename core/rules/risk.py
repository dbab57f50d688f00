"""Risk (rules §7): sizing, feasibility, the final check before an order, the summary's status, Kelly.

Sizing: qty = (risk_per_trade x equity) / (entry x stop_loss_pct), then capped so one position is at most
max_exposure x equity / min_slots ($10,000 -> $2,667), by the exposure still free, and by buying power. Exits never
need permission.

A full position is what the risk rule and the slot give (the smaller of the two), before the exposure and
buying-power caps. An entry that those caps cut below ``min_position_fraction`` of a full position is not opened
(``risk_size_too_small``): the last few dollars of exposure buy a token position (one share) that carries fees and
a slot but no weight.

Plain functions of numbers (and the parameter vector ``p`` of ``core.rules.params``); ``core.engine.account`` builds
the account's numbers and calls them.
"""

from __future__ import annotations

import math

import numpy as np

from core.rules.bracket import stop_price
from core.rules.params import (
    P_DAILY_LOSS_LIMIT,
    P_MAX_CONCURRENT_RISK,
    P_MAX_EXPOSURE,
    P_MAX_POSITIONS,
    P_MIN_POSITION_FRACTION,
    P_MIN_SLOTS,
    P_RISK_PER_TRADE,
    P_STOP_LOSS_PCT,
)
from core.rules.reasons import (
    OK,
    RISK_ALREADY_HELD,
    RISK_BUYING_POWER,
    RISK_CONCURRENT,
    RISK_DAILY_LOSS,
    RISK_EXPOSURE,
    RISK_MAX_POSITIONS,
    RISK_NO_PRICE,
    RISK_SIZE_TOO_SMALL,
    RISK_SIZE_ZERO,
    RISK_SLOT,
)

EPS = 1e-9

# what capped a size
CAPPED_NONE, CAPPED_SLOT, CAPPED_EXPOSURE, CAPPED_BUYING_POWER, CAPPED_EQUITY, CAPPED_PRICE = 0, 1, 2, 3, 4, 5
CAPPED_NAMES: tuple[str | None, ...] = (None, "slot", "exposure", "buying_power", "equity", "price")

# the portfolio summary's status
STATUS_SAFE, STATUS_CAUTION, STATUS_BLOCKED = 0, 1, 2
STATUS_NAMES = ("safe", "caution", "blocked")
CAUTION_AT = 0.75  # of the maximum concurrent risk


def calculate_position_size(equity: float, price: float, risk_per_trade: float, stop_loss_pct: float,
                            max_exposure: float, min_slots: float, current_exposure: float = 0.0,
                            buying_power: float = math.inf) -> tuple[int, int, int]:
    """Whole shares to buy at ``price``: (qty, the risk rule's qty before caps, CAPPED_* code)."""
    if equity <= 0 or price <= 0:
        return 0, 0, CAPPED_EQUITY if equity <= 0 else CAPPED_PRICE
    raw = math.floor((risk_per_trade * equity) / (price * stop_loss_pct) + EPS)
    qty, capped = raw, CAPPED_NONE
    # the caps in order: one slot, the exposure left, buying power (an infinite one is no cap)
    for code, notional in ((CAPPED_SLOT, max_exposure * equity / min_slots),
                           (CAPPED_EXPOSURE, max(0.0, max_exposure * equity - current_exposure)),
                           (CAPPED_BUYING_POWER, max(0.0, buying_power))):
        if math.isinf(notional):
            continue
        cap = math.floor(notional / price + EPS)
        if cap < qty:
            qty, capped = cap, code
    return max(0, qty), raw, capped


def size_position(p: np.ndarray | list[float], equity: float, price: float, exposure: float,
                  buying_power: float) -> tuple[int, int, int]:
    """``calculate_position_size`` with the settings of ``p`` and the account's exposure and buying power."""
    return calculate_position_size(equity, price, p[P_RISK_PER_TRADE], p[P_STOP_LOSS_PCT], p[P_MAX_EXPOSURE],
                                   p[P_MIN_SLOTS], exposure, buying_power)


def full_position_size(p: np.ndarray | list[float], equity: float, price: float) -> int:
    """Shares of a full position at ``price``: the risk rule capped by the slot, with nothing held or pending and
    buying power unlimited."""
    return calculate_position_size(equity, price, p[P_RISK_PER_TRADE], p[P_STOP_LOSS_PCT], p[P_MAX_EXPOSURE],
                                   p[P_MIN_SLOTS])[0]


def position_stop_risk(qty: float, market_price: float, stop: float, avg_price: float, stop_loss_pct: float) -> float:
    """Money lost if the stop fills (a position without a recorded stop: the bracket's)."""
    level = stop if stop else stop_price(avg_price, stop_loss_pct)
    return max(0.0, qty * (market_price - level))


def concurrent_risk(equity: float, stop_risk_total: float) -> float:
    """The open positions' stop risk as a fraction of equity (all of it when there is no equity)."""
    if equity <= 0:
        return 1.0
    return stop_risk_total / equity


def daily_loss(equity: float, start_of_day_equity: float) -> float:
    """Loss from the start-of-day equity, as a fraction of it (0 when the account is up)."""
    if start_of_day_equity <= 0:
        return 0.0
    return max(0.0, (start_of_day_equity - equity) / start_of_day_equity)


def daily_loss_halts(loss: float, limit: float) -> bool:
    return loss >= limit - EPS


def slots_full(n_positions: int, n_pending: int, max_positions: float) -> bool:
    return n_positions + n_pending >= max_positions


def risk_after_fill(current: float, qty: float, price: float, stop_loss_pct: float, equity: float) -> float:
    return current + qty * price * stop_loss_pct / max(equity, EPS)


def check_signal_risk_feasibility(p: np.ndarray | list[float], equity: float, start_of_day_equity: float,
                                  n_positions: int, n_pending: int, price: float, exposure: float,
                                  buying_power: float, current_risk: float) -> int:
    """Could a new entry be opened now at ``price`` (NaN or <= 0: no price)? A reason code, OK if it could."""
    if daily_loss_halts(daily_loss(equity, start_of_day_equity), p[P_DAILY_LOSS_LIMIT]):
        return RISK_DAILY_LOSS
    if slots_full(n_positions, n_pending, p[P_MAX_POSITIONS]):
        return RISK_MAX_POSITIONS
    if not price > 0:
        return RISK_NO_PRICE
    qty, _, capped = size_position(p, equity, price, exposure, buying_power)
    if qty <= 0:
        return RISK_EXPOSURE if capped in (CAPPED_EXPOSURE, CAPPED_SLOT) else RISK_BUYING_POWER
    if qty < p[P_MIN_POSITION_FRACTION] * full_position_size(p, equity, price) - EPS:
        return RISK_SIZE_TOO_SMALL
    if current_risk + qty * price * p[P_STOP_LOSS_PCT] / equity > p[P_MAX_CONCURRENT_RISK] + EPS:
        return RISK_CONCURRENT
    return OK


def should_allow_trade(p: np.ndarray | list[float], is_exit: bool, qty: float, price: float, held: bool,
                       equity: float, start_of_day_equity: float, n_positions: int, n_pending: int,
                       exposure: float, buying_power: float, current_risk: float) -> int:
    """The final check before an order leaves (also on Approve): the intent's own size against the account now."""
    if is_exit:
        return OK
    if qty <= 0:
        return RISK_SIZE_ZERO
    if held:
        return RISK_ALREADY_HELD
    if daily_loss_halts(daily_loss(equity, start_of_day_equity), p[P_DAILY_LOSS_LIMIT]):
        return RISK_DAILY_LOSS
    if slots_full(n_positions, n_pending, p[P_MAX_POSITIONS]):
        return RISK_MAX_POSITIONS
    notional = qty * price
    if notional > p[P_MAX_EXPOSURE] * equity / p[P_MIN_SLOTS] + price:
        return RISK_SLOT
    if exposure + notional > p[P_MAX_EXPOSURE] * equity + EPS:
        return RISK_EXPOSURE
    if notional > buying_power + EPS:
        return RISK_BUYING_POWER
    if current_risk + notional * p[P_STOP_LOSS_PCT] / equity > p[P_MAX_CONCURRENT_RISK] + EPS:
        return RISK_CONCURRENT
    return OK


def risk_status(current: float, max_risk: float, loss: float, loss_limit: float, n_positions: int,
                max_positions: float) -> int:
    """The portfolio summary's status: blocked at any limit, caution from 75 % of the concurrent risk."""
    if daily_loss_halts(loss, loss_limit) or current >= max_risk - EPS or n_positions >= max_positions:
        return STATUS_BLOCKED
    return STATUS_CAUTION if current >= CAUTION_AT * max_risk else STATUS_SAFE


def kelly_fraction(win_rate: float, payoff_ratio: float) -> float:
    """f* = W - (1 - W) / R."""
    if payoff_ratio <= 0:
        return -1.0 if win_rate < 1 else 1.0
    return win_rate - (1 - win_rate) / payoff_ratio


# The Kelly figures need this many closed trades: the win rate of 30 trades is still +/- 9 points (one standard
# error at 50 %), and below it one trade moves the fraction by more than the whole risk per trade.
KELLY_MIN_TRADES = 30


def kelly_measured(trades: int, payoff_ratio: float) -> bool:
    """Are there enough closed trades, with wins and losses (a payoff ratio), for the Kelly figures?"""
    return trades >= KELLY_MIN_TRADES and payoff_ratio > 0


def kelly_margin(win_rate: float, payoff_ratio: float, risk_per_trade: float,
                 trades: int = KELLY_MIN_TRADES) -> dict[str, float | bool]:
    """Kelly fraction and its safety margin over the risk actually taken; ``measured``: from a large enough sample
    (``kelly_measured``), and only a measured margin below 1x warns."""
    f = kelly_fraction(win_rate, payoff_ratio)
    margin = f / risk_per_trade if risk_per_trade > 0 else float("inf")
    measured = kelly_measured(trades, payoff_ratio)
    return {"kelly_fraction": f, "margin": margin, "measured": measured, "warning": measured and margin < 1.0}

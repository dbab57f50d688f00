"""The simulated broker's fill rule (rules §9).

A market order fills at the open of the first bar that starts after it was sent, moved against the trader by the
slippage, if the cash covers it and its fee. The fee of a fill is a fixed fee per order plus a fee per share
(``order_fee``). A bracket's legs wake from the entry's bar on: the first
bar whose low reaches the stop or whose high reaches the take-profit ends the position (the stop wins a bar that
touches both); a gap through a level fills at the bar's open, otherwise at the level; the stop pays slippage.
"""

from __future__ import annotations

import numpy as np

LEG_NONE, LEG_STOP, LEG_TAKE_PROFIT = 0, 1, 2
CASH_TOLERANCE = 1e-6


def market_fill_price(open_price: float, is_buy: bool, slippage: float) -> float:
    return open_price * (1 + slippage) if is_buy else open_price * (1 - slippage)


def order_fee(qty: float, per_order: float, per_share: float) -> float:
    """A fill's fee (``SIM_FEE_PER_ORDER``, ``SIM_FEE_PER_SHARE``): the same for a buy and a sell, an entry and a
    bracket leg."""
    return per_order + per_share * qty


def affordable(cost: float, fee: float, cash: float) -> bool:
    """Does the cash cover a buy's cost and its fee?"""
    return not cost + fee > cash + CASH_TOLERANCE


def first_bracket_hit(opens: np.ndarray, highs: np.ndarray, lows: np.ndarray, stop: float, take_profit: float,
                      slippage: float) -> tuple[int, int, float]:
    """(bar index, LEG_* code, fill price) of the first bar that reaches a leg; (-1, LEG_NONE, NaN) when none does.
    ``stop`` / ``take_profit`` NaN: that leg is absent."""
    for i in range(len(opens)):
        if lows[i] <= stop:  # the stop first: a bar that touches both is read as the worse outcome
            px = opens[i] if opens[i] <= stop else stop
            return i, LEG_STOP, px * (1 - slippage)
        if highs[i] >= take_profit:
            return i, LEG_TAKE_PROFIT, opens[i] if opens[i] >= take_profit else take_profit
    return -1, LEG_NONE, np.nan

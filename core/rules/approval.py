"""What an intent may still become when it is sent (rules §9): the price since the signal.

An intent is priced when its signal is made; a manual approval can come minutes later. The order that leaves is
re-priced at the current price with the same functions that built the intent (``core.rules.risk`` sizing,
``core.rules.bracket`` levels); these two checks say whether the signal still stands at that price. A buy is
refused when the price has fallen from the signal by more than ``APPROVAL_MAX_MOVE_PCT`` (a falling price is the
signal failing, and the re-priced stop would sit below where the signal's stop already was) or when it is already
at or through the signal's stop. A rise is not refused: the buy is re-sized and re-bracketed at the higher price,
so its risk in money is what the sizing rule allows.
"""

from __future__ import annotations

from core.rules.bracket import stop_hit
from core.rules.reasons import APPROVAL_PRICE_MOVED, APPROVAL_STOP_CROSSED, OK, RISK_NO_PRICE

EPS = 1e-9


def price_move(signal_price: float, price_now: float) -> float:
    """The move since the signal as a fraction of the signal's price (+0.01: 1 % higher now)."""
    return price_now / signal_price - 1.0


def check_price_since_signal(signal_price: float, price_now: float, signal_stop: float, max_move_pct: float) -> int:
    """May a buy made at ``signal_price`` (its stop ``signal_stop``; 0: none) still be sent at ``price_now``?

    OK, or the reason code: no price, already through the signal's stop, or fallen by more than ``max_move_pct``
    (exactly the limit is still sent)."""
    if not (price_now > 0 and signal_price > 0):
        return RISK_NO_PRICE
    if signal_stop > 0 and stop_hit(price_now, signal_stop):
        return APPROVAL_STOP_CROSSED
    if price_move(signal_price, price_now) < -max_move_pct - EPS:
        return APPROVAL_PRICE_MOVED
    return OK

"""The one bracket: a position's stop-loss and take-profit from its entry price (rules §7, 9).

Every place that needs the levels (an entry or basket intent, a fill without an intent, a position adopted from the
broker, the risk of a position without a recorded stop) calls ``bracket_prices``; the prices are rounded to what US
exchanges accept (``price_increment``), as the broker's legs are.
"""

from __future__ import annotations


def price_increment(price: float) -> float:
    """Round an order price to what US exchanges accept (Rule 612: cents at $1.00 and above, else 1/100 cent)."""
    return round(price, 2) if price >= 1.0 else round(price, 4)


def stop_price(entry: float, stop_loss_pct: float) -> float:
    return price_increment(entry * (1 - stop_loss_pct))


def take_profit_price(entry: float, take_profit_pct: float) -> float:
    return price_increment(entry * (1 + take_profit_pct))


def bracket_prices(entry: float, stop_loss_pct: float, take_profit_pct: float) -> tuple[float, float]:
    """(stop, take-profit) of a long bought at ``entry``."""
    return stop_price(entry, stop_loss_pct), take_profit_price(entry, take_profit_pct)


def stop_hit(price: float, stop: float) -> bool:
    return price <= stop


def take_profit_hit(price: float, take_profit: float) -> bool:
    return price >= take_profit

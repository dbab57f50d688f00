"""How a figure is shown: dollars, and the text of a figure without a value (the n/a rule of annualised
figures, ``core.metrics.figures``)."""

from __future__ import annotations

from core.metrics.figures import ANNUALISED, MIN_ANNUALISED_SESSIONS, enough_sessions

NA_ANNUALISED = f"n/a (needs ≥ {MIN_ANNUALISED_SESSIONS} sessions)"  # how a page shows one of them below the minimum
NA = "–"  # how a page shows any other figure without a value (no trade: no win rate, no profit factor)


def money(x: float) -> str:
    """Dollars with the sign in front: -$636.06."""
    return f"{'-' if x < 0 else ''}${abs(x):,.2f}"


def missing_text(metric: str, sessions: int | None = None) -> str:
    """What a page shows for ``metric`` without a value, over a run of ``sessions`` sessions (None: unknown):
    the n/a rule for an annualised figure below the minimum, else "–"."""
    if metric in ANNUALISED and (sessions is None or not enough_sessions(sessions)):
        return NA_ANNUALISED
    return NA

"""How a figure is shown: dollars, percentages (never "-0 %"), research figures by name, and the text of a figure
without a value (the n/a rule of annualised figures, ``core.metrics.figures``)."""

from __future__ import annotations

import math
from typing import Any

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


# research figures that are fractions: shown as percentages, like every other page shows rates and returns
PERCENT_FIGURES = frozenset({"total_return", "return_per_session", "cagr", "max_drawdown", "win_rate", "exposure",
                             "stop_out_rate", "flip_flop_rate", "strong_rate", "mae_median", "mfe_median",
                             "signal_mae_median", "signal_mfe_median"})


def percent(v: float | None, digits: int = 0, *, signed: bool = False) -> str:
    """A fraction as a percentage with ``digits`` decimals: 0.185835 -> "18.58%" (digits=2). What rounds to zero
    is "0%" without a sign (a tiny loss printed "-0%", which reads as a loss that is not there); no value "–"."""
    if v is None or isinstance(v, bool) or not isinstance(v, int | float) or math.isnan(v):
        return NA
    if math.isinf(v):
        return "∞" if v > 0 else "-∞"
    r = round(float(v) * 100.0, digits)
    if r == 0:
        return f"{0.0:.{digits}f}%"
    return f"{r:{'+' if signed else ''}.{digits}f}%"


def plain_number(v: Any) -> str:
    """A number as text without a negative zero: ``-0.0`` (a grid value such as -0.04 + 2 x 0.02) is "0.0"."""
    if isinstance(v, float) and v == 0.0:
        return "0.0"
    return str(v)


def figure_text(metric: str, v: Any) -> str | None:
    """A research figure as a page shows it when it is a fraction (``PERCENT_FIGURES``), else None: the caller's
    own number format applies."""
    if metric in PERCENT_FIGURES and isinstance(v, int | float) and not isinstance(v, bool):
        return percent(v, 2)
    return None

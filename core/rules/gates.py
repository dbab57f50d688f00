"""Signal gates (rules §4), each once, as a plain function of numbers. Each returns a reason code (0 = pass).

Order: market session -> dynamic cutoff -> mixer cooldown -> direction lock -> entry blocks (pause, protections,
symbol cooldown, holdings, conflicts, a live intent) -> risk feasibility (``core.rules.risk``) -> RTH daily cap
(stocks) or the ETF lock (baskets). Times are POSIX seconds; a lock or cooldown is the time it expires at
(``-inf`` when there is none): it holds while ``now < until``. The state these read (the cooldowns, locks and cap
counts) is kept by ``core.state.locks`` and ``core.state.caps``.
"""

from __future__ import annotations

import math

from core.rules.reasons import (
    ALREADY_HELD,
    BELOW_CUTOFF,
    CONFLICT,
    DIRECTION_LOCK,
    ETF_HELD,
    ETF_LOCK,
    INTENT_PENDING,
    MARKET_CLOSED,
    MIXER_COOLDOWN,
    OK,
    PAUSED,
    PROTECTION,
    RTH_DAILY_CAP,
    SYMBOL_COOLDOWN,
)

# session segments of the dynamic cutoff
SEGMENT_OPEN, SEGMENT_MIDDAY, SEGMENT_CLOSE = 0, 1, 2
# tiers as codes
TIER_A, TIER_B, TIER_BENCH = 0, 1, 2
TIER_CODES = {"A": TIER_A, "B": TIER_B, "Bench": TIER_BENCH}


def ticker_due(last_processed: float, now: float, interval_s: float, jitter_s: float) -> bool:
    """A tier ticker is due once its interval has passed since it was last processed (never: NaN), less a little
    jitter so a job that starts late does not skip a cycle."""
    return not now - last_processed < interval_s - jitter_s


def check_market_session(in_regular_hours: bool) -> int:
    return OK if in_regular_hours else MARKET_CLOSED


def session_segment(minutes_since_open: float, minutes_to_close: float, segment_min: float) -> int:
    """The first ``segment_min`` minutes are the open, the last ``segment_min`` the close (NaN: outside a session,
    which counts as midday)."""
    if minutes_since_open < segment_min:
        return SEGMENT_OPEN
    if minutes_to_close <= segment_min:
        return SEGMENT_CLOSE
    return SEGMENT_MIDDAY


def dynamic_cutoff(segment: int, vol_spike: float, cutoff_open: float, cutoff_midday: float, cutoff_close: float,
                   high_vol_spike: float, high_vol_add: float, cutoff_delta: float) -> float:
    """cutoff(session segment, volatility regime) + cutoff_delta, never below 0.01.

    Noisier segments (open, close) and high-volatility bars need a stronger score; the delta is the trader's knob.
    """
    if segment == SEGMENT_OPEN:
        base = cutoff_open
    elif segment == SEGMENT_CLOSE:
        base = cutoff_close
    else:
        base = cutoff_midday
    if vol_spike >= high_vol_spike:
        base += high_vol_add
    return max(0.01, round(base + cutoff_delta, 6))


def check_cutoff(score: float, cutoff: float) -> int:
    return OK if abs(score) >= cutoff else BELOW_CUTOFF


def lock_holds(until: float, now: float) -> bool:
    """A cooldown or lock that expires at ``until`` still holds at ``now``."""
    return now < until


def check_mixer_cooldown(cooldown_until: float, now: float) -> int:
    return MIXER_COOLDOWN if lock_holds(cooldown_until, now) else OK


def check_direction_lock(lock_sign: int, lock_until: float, sign: int, now: float) -> int:
    """No signal of the opposite sign while the last intent's direction lock holds."""
    return DIRECTION_LOCK if lock_holds(lock_until, now) and lock_sign != sign else OK


def check_entry_blocks(paused: bool, protection_pause: bool, symbol_cooldown: bool, held: bool, etf: bool,
                       conflict: bool, intent_pending: bool) -> int:
    """What stops a new entry (a long, or a basket's inverse ETF) before risk is asked, in this one order. ``etf``:
    the entry is a basket's inverse ETF (its holding is ``etf_held``)."""
    if paused:
        return PAUSED
    if protection_pause:
        return PROTECTION
    if symbol_cooldown:
        return SYMBOL_COOLDOWN
    if held:
        return ETF_HELD if etf else ALREADY_HELD
    if conflict:
        return CONFLICT
    if intent_pending:
        return INTENT_PENDING
    return OK


def tier_cap(tier: int, tier_a_cap: float, tier_b_cap: float, bench_cap: float) -> float:
    if tier == TIER_A:
        return tier_a_cap
    if tier == TIER_B:
        return tier_b_cap
    return bench_cap


def check_rth_daily_cap(symbol_count: float, global_count: float, symbol_cap: float, global_cap: float) -> int:
    """The per-ticker and global caps of actionable signals against the New York day's counts."""
    return RTH_DAILY_CAP if symbol_count >= symbol_cap or global_count >= global_cap else OK


def cap_slot(now: float, slot_s: float) -> int:
    """The slot a cap count belongs to: one count per ticker and slot (``cap:{symbol}:{date}:{slot}``)."""
    return int(now) // max(1, int(slot_s))


def check_etf_lock(lock_until: float, now: float) -> int:
    """One intent per inverse ETF per ``ETF_LOCK_S``."""
    return ETF_LOCK if lock_holds(lock_until, now) else OK


def no_lock() -> float:
    """The ``until`` of a lock that is not set."""
    return -math.inf

"""Token buckets for external market-data calls (rules §5), as plain functions.

10 calls a minute split by tier: A 6, B 3, Reserve 1. Buckets refill at each calendar minute (a fixed window), so a
minute never grants more than its allocation. Bench tickers draw from the Reserve. Tier A may borrow a Reserve token
only in seconds 0-10 of a minute, and only while the reserve fallback is on. The caller keeps the levels and takes
the token the answer names; the Redis backend's Lua script (``core.services.redis_buckets``) applies the same rule
atomically across processes.
"""

from __future__ import annotations

from core.rules.gates import TIER_A, TIER_B

GRANT_DENIED, GRANT_OWN, GRANT_BORROWED = 0, 1, 2
BUCKET_A, BUCKET_B, BUCKET_RESERVE = 0, 1, 2


def bucket_of_tier(tier: int) -> int:
    """Tier A and B have their own bucket; Bench draws from the Reserve."""
    if tier == TIER_A:
        return BUCKET_A
    if tier == TIER_B:
        return BUCKET_B
    return BUCKET_RESERVE


def minute_of(now: float) -> int:
    """The calendar minute a time falls in: the bucket window."""
    return int(now) // 60


def needs_refill(minute: int, last_minute: int) -> bool:
    """A new minute starts with full buckets."""
    return minute != last_minute


def take_token(own_left: float, reserve_left: float, tier: int, second: int, allow_borrow: bool,
               borrow_window_s: float) -> int:
    """Which token a request gets: its own bucket's, a borrowed Reserve one (tier A, early in the minute), or none."""
    if own_left > 0:
        return GRANT_OWN
    if tier == TIER_A and allow_borrow and second < borrow_window_s and reserve_left > 0:
        return GRANT_BORROWED
    return GRANT_DENIED

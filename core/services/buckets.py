"""The in-process token buckets (rules §5): the levels of the current minute and the per-minute counts of the
overflow KPI. Which token a request gets is the rule of ``core.rules.tokens``; the Redis backend
(``core.services.redis_buckets``) keeps the same levels in Redis.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from core.rules.gates import TIER_BENCH, TIER_CODES
from core.rules.tokens import GRANT_BORROWED, GRANT_OWN, minute_of, needs_refill, take_token

log = logging.getLogger(__name__)

RESERVE = "Reserve"


@dataclass(frozen=True)
class Grant:
    granted: bool
    source: str  # tier name, "Reserve" (borrowed or Bench), or "" when denied
    borrowed: bool = False


_GRANTS: dict[str, Grant] = {}


def _granted(bucket: str) -> Grant:
    """A plain grant from ``bucket`` (immutable, so one object per bucket serves every call)."""
    g = _GRANTS.get(bucket)
    if g is None:
        g = _GRANTS[bucket] = Grant(True, bucket)
    return g


class TokenBuckets(Protocol):
    def try_consume(self, tier: str, now: datetime, *, allow_borrow: bool) -> Grant: ...
    def remaining(self, now: datetime) -> dict[str, int]: ...


def minute_key(now: datetime) -> int:
    return minute_of(now.timestamp())


def dump_stats(stats: dict[tuple[int, str], list[int]]) -> list[list[object]]:
    """Per-minute counts not yet drained to ``token_stats``: [minute, tier, requested, granted, borrowed]."""
    return [[m, t, *v] for (m, t), v in sorted(stats.items())]


def restore_stats(stats: dict[tuple[int, str], list[int]], saved: dict[str, object]) -> None:
    rows = saved.get("stats")
    if isinstance(rows, list):
        for row in rows:
            if isinstance(row, list) and len(row) == 5:
                stats[(int(row[0]), str(row[1]))] = [int(x) for x in row[2:]]


class LocalTokenBuckets:
    """In-process buckets; also keeps per-minute request/grant counts for the overflow KPI."""

    def __init__(self, capacities: dict[str, int], borrow_window_s: int = 10) -> None:
        self.capacities = dict(capacities)
        self.borrow_window_s = borrow_window_s
        self._minute: int | None = None
        self._left: dict[str, int] = {}
        # (minute, tier) -> [requested, granted, borrowed]
        self.stats: dict[tuple[int, str], list[int]] = defaultdict(lambda: [0, 0, 0])

    def _roll(self, now: datetime) -> int:
        m = minute_key(now)
        if self._minute is None or needs_refill(m, self._minute):
            self._minute = m
            self._left = dict(self.capacities)
        return m

    def try_consume(self, tier: str, now: datetime, *, allow_borrow: bool) -> Grant:
        m = self._roll(now)
        bucket = RESERVE if tier == "Bench" else tier
        st = self.stats[(m, tier)]
        st[0] += 1
        second = int(now.timestamp()) % 60
        got = take_token(self._left.get(bucket, 0), self._left.get(RESERVE, 0), TIER_CODES.get(tier, TIER_BENCH),
                         second, allow_borrow, self.borrow_window_s)
        if got == GRANT_OWN:
            self._left[bucket] -= 1
            st[1] += 1
            return _granted(bucket)
        if got == GRANT_BORROWED:
            self._left[RESERVE] -= 1
            st[1] += 1
            st[2] += 1
            log.info("tier A borrowed a reserve token at second %d of the minute", second)
            return Grant(True, RESERVE, borrowed=True)
        return Grant(False, "")

    def remaining(self, now: datetime) -> dict[str, int]:
        self._roll(now)
        return dict(self._left)

    def dump(self) -> dict[str, object]:
        """The current minute's levels, so a restart inside a minute grants no extra tokens, and the counts
        not yet persisted, so the overflow KPI of that minute survives the restart too."""
        return {"minute": self._minute, "left": self._left, "stats": dump_stats(self.stats)}

    def restore(self, saved: dict[str, object]) -> None:
        minute, left = saved.get("minute"), saved.get("left")
        if isinstance(minute, int) and isinstance(left, dict):
            self._minute = minute
            self._left = {k: int(v) for k, v in left.items() if k in self.capacities}
        restore_stats(self.stats, saved)

    def drain_stats(self, now: datetime) -> list[tuple[int, str, int, int, int]]:
        """Counts of minutes that have ended, removed from memory (the engine persists them)."""
        current = minute_key(now)
        done = [k for k in self.stats if k[0] < current]
        if not done:
            return []
        out = [(m, t, *self.stats.pop((m, t))) for m, t in sorted(done)]
        return out  # type: ignore[misc]

    def current_stats(self, now: datetime) -> list[tuple[int, str, int, int, int]]:
        current = minute_key(now)
        return [(m, t, *v) for (m, t), v in self.stats.items() if m == current]  # type: ignore[misc]

"""Signal gates (rules §4), in order. Each returns None to pass or a reason string.

Order: market session -> dynamic cutoff -> mixer cooldown -> direction lock ->
risk feasibility (core.rules.risk) -> RTH daily cap. The cap counts only signals that
passed everything before it ("actionable"), and its increment is idempotent per
``cap:{symbol}:{date}:{slot}`` for ``cap_idempotency_s``. The checks are pure; the
cap's counts live in memory (``CapCounters``), written through to ``counters``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from functools import lru_cache

from core.clock import is_rth, minutes_since_open, minutes_to_close, trading_date
from core.config import Settings
from core.state.kv import KVStore
from core.state.store import Store

BELOW_CUTOFF = "below_cutoff"
MARKET_CLOSED = "market_closed"
MIXER_COOLDOWN = "mixer_cooldown"
DIRECTION_LOCK = "direction_lock"
RTH_DAILY_CAP = "rth_daily_cap"


def check_market_session(now: datetime) -> str | None:
    return None if is_rth(now) else MARKET_CLOSED


@lru_cache(maxsize=256)  # every ticker of a tick asks with the same ``now``
def session_segment(now: datetime, segment_min: int) -> str:
    since = minutes_since_open(now)
    left = minutes_to_close(now)
    if since is not None and since < segment_min:
        return "open"
    if left is not None and left <= segment_min:
        return "close"
    return "midday"


def dynamic_cutoff(now: datetime, vol_spike: float, settings: Settings, cutoff_delta: float) -> float:
    """cutoff(session segment, volatility regime) + cutoff_delta.

    Noisier segments (open, close) and high-volatility bars need a stronger
    score; the delta is the trader's live knob. Never below 0.01.
    """
    base = {"open": settings.cutoff_open, "midday": settings.cutoff_midday, "close": settings.cutoff_close}[
        session_segment(now, settings.cutoff_segment_min)
    ]
    if vol_spike >= settings.cutoff_high_vol_spike:
        base += settings.cutoff_high_vol_add
    return max(0.01, round(base + cutoff_delta, 6))


def check_cutoff(score: float, cutoff: float) -> str | None:
    return None if abs(score) >= cutoff else BELOW_CUTOFF


def cooldown_key(symbol: str) -> str:
    return f"cooldown:{symbol}"


def direction_key(symbol: str) -> str:
    return f"dirlock:{symbol}"


def check_mixer_cooldown(kv: KVStore, symbol: str, now: datetime) -> str | None:
    return MIXER_COOLDOWN if kv.get(cooldown_key(symbol), now) is not None else None


def check_direction_lock(kv: KVStore, symbol: str, sign: int, now: datetime) -> str | None:
    """No re-entry with the opposite sign within the lock window of the last strong signal."""
    held = kv.get(direction_key(symbol), now)
    if held is not None and int(held) != sign:
        return DIRECTION_LOCK
    return None


def record_strong_signal(kv: KVStore, symbol: str, sign: int, lock_s: int, now: datetime) -> None:
    """A signal passed the cutoff: its sign holds the direction lock."""
    if lock_s > 0:
        kv.set(direction_key(symbol), str(sign), lock_s, now)


def start_cooldown(kv: KVStore, symbol: str, cooldown_s: int, now: datetime) -> None:
    if cooldown_s > 0:
        kv.set(cooldown_key(symbol), "1", cooldown_s, now)


def cap_keys(symbol: str, now: datetime) -> tuple[str, str]:
    day = trading_date(now).isoformat()
    return f"rth:{day}:{symbol}", f"rth:{day}:__global__"


def tier_cap(settings: Settings, tier: str) -> int:
    return {"A": settings.tier_a_daily_cap, "B": settings.tier_b_daily_cap}.get(tier, settings.bench_daily_cap)


class CapCounters:
    """The RTH cap counters (the ``counters`` table) in memory: loaded at start (and after a rollback, which
    leaves them stale until the next look-up), every increment written through to the table."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.counts: dict[str, int] = {}
        self._stale = False
        store.on_rollback(self._mark_stale)
        self.load()

    def load(self) -> None:
        self.counts = {r["key"]: int(r["value"] or 0) for r in self.store.query("SELECT key, value FROM counters")}
        self._stale = False

    def _mark_stale(self) -> None:
        self._stale = True

    def view(self) -> Mapping[str, int]:
        """The counts as they stand (reloaded first if a rollback left them stale)."""
        if self._stale:
            self.load()
        return self.counts

    def incr(self, key: str, by: int = 1) -> int:
        counts = self.view()
        self.store.execute(
            "INSERT INTO counters(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=value+excluded.value",
            (key, by),
        )
        counts[key] = counts.get(key, 0) + by
        return counts[key]


def check_rth_daily_cap(counts: Mapping[str, int], settings: Settings, symbol: str, tier: str,
                        now: datetime) -> str | None:
    """The per-ticker and global caps against the day's counts (pure; ``record_rth_signal`` counts)."""
    sym_key, glob_key = cap_keys(symbol, now)
    if counts.get(sym_key, 0) >= tier_cap(settings, tier) or counts.get(glob_key, 0) >= settings.rth_daily_cap:
        return RTH_DAILY_CAP
    return None


def record_rth_signal(counters: CapCounters, kv: KVStore, settings: Settings, symbol: str, now: datetime,
                      slot_s: int) -> bool:
    """Count an actionable signal against the per-ticker and global caps, once per slot.

    A repeat of the same ``cap:{symbol}:{date}:{slot}`` inside the idempotency
    window (a retried job, a restart mid-tick) is not counted again (False).
    """
    sym_key, glob_key = cap_keys(symbol, now)
    slot = int(now.timestamp()) // max(1, slot_s)
    idem = f"cap:{symbol}:{trading_date(now).isoformat()}:{slot}"
    if not kv.set_nx(idem, "1", settings.cap_idempotency_s, now):
        return False
    counters.incr(sym_key)
    counters.incr(glob_key)
    return True

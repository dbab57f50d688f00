"""Every per-symbol time lock the engine keeps, named once: the mixer cooldown, the direction lock, the cooldown
after a losing exit, the ETF lock, the RTH cap's idempotency slot and a Bench ticker's pending event.

They live in the TTL key store (``core.state.kv``: SQLite, or Redis shared by several engines); this module owns
their keys and answers each as the number the rules read: the POSIX second it expires at (``-inf`` when unset).
"""

from __future__ import annotations

import math
from datetime import datetime

from core.state.kv import KVStore, SqliteKV


def _until(entry: tuple[str, float] | None) -> float:
    return -math.inf if entry is None else entry[1]


class SymbolLocks:
    def __init__(self, kv: KVStore) -> None:
        self.kv = kv

    # ------------------------------------------------------------ mixer cooldown (rules §4.3)
    def cooldown_until(self, symbol: str, now: datetime) -> float:
        return _until(self.kv.entry(f"cooldown:{symbol}", now))

    def start_cooldown(self, symbol: str, seconds: float, now: datetime) -> None:
        if seconds > 0:
            self.kv.set(f"cooldown:{symbol}", "1", seconds, now)

    # ------------------------------------------------------------ direction lock (rules §4.4)
    def direction(self, symbol: str, now: datetime) -> tuple[int, float]:
        """(sign of the last intent, when its lock expires); (0, -inf) when none holds."""
        entry = self.kv.entry(f"dirlock:{symbol}", now)
        return (0, -math.inf) if entry is None else (int(entry[0]), entry[1])

    def lock_direction(self, symbol: str, sign: int, seconds: float, now: datetime) -> None:
        if seconds > 0:
            self.kv.set(f"dirlock:{symbol}", str(sign), seconds, now)

    # ------------------------------------------------------------ no re-entry after a losing exit (rules §10)
    def symbol_cooldown_until(self, symbol: str, now: datetime) -> float:
        return _until(self.kv.entry(f"protect:{symbol}", now))

    def start_symbol_cooldown(self, symbol: str, seconds: float, now: datetime) -> None:
        if seconds > 0:
            self.kv.set(f"protect:{symbol}", "losing_exit", seconds, now)

    # ------------------------------------------------------------ one intent per inverse ETF (rules §8)
    @staticmethod
    def etf_lock_key(etf: str) -> str:
        return f"etf_lock:{etf}"

    def etf_lock_until(self, etf: str, now: datetime) -> float:
        return _until(self.kv.entry(self.etf_lock_key(etf), now))

    def take_etf_lock(self, etf: str, basket: str, seconds: float, now: datetime) -> bool:
        """Lock the ETF for ``seconds``; False when another engine took it first (a shared Redis)."""
        return self.kv.set_nx(self.etf_lock_key(etf), basket, seconds, now)

    # ------------------------------------------------------------ RTH cap: one count per ticker and slot (rules §4.6)
    def take_cap_slot(self, symbol: str, day: str, slot: int, seconds: float, now: datetime) -> bool:
        """False when this ticker's slot was counted already (a retried job, a restart mid-tick)."""
        return self.kv.set_nx(f"cap:{symbol}:{day}:{slot}", "1", seconds, now)

    # ------------------------------------------------------------ Bench events seen but not processed (rules §2)
    def note_event(self, symbol: str, event_id: str, seconds: float, now: datetime) -> None:
        self.kv.set(f"event:{symbol}", event_id, seconds, now)

    def clear_event(self, symbol: str) -> None:
        self.kv.delete(f"event:{symbol}")

    def pending_events(self, now: datetime) -> dict[str, str]:
        """Bench symbol -> event id, for a restart (SQLite key store only: a shared store's are other engines')."""
        if not isinstance(self.kv, SqliteKV):
            return {}
        return {k.removeprefix("event:"): v for k, v in self.kv.keys("event:", now).items()}

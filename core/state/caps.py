"""The RTH daily cap's counts (rules §4.6) in memory, written through to the ``counters`` table.

Per ticker and in all, per New York trading date (``rth:{date}:{symbol}``, ``rth:{date}:__global__``: the keys are
made here only). Loaded at start (and after a rollback, which leaves them stale until the next look-up).
"""

from __future__ import annotations

from collections.abc import Mapping

from core.state.store import Store

GLOBAL = "__global__"


def cap_key(day: str, symbol: str) -> str:
    """The counter of ``symbol`` (or ``GLOBAL``) on the New York date ``day`` (ISO)."""
    return f"rth:{day}:{symbol}"


class CapCounters:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.counts: dict[str, int] = {}
        self._stale = False
        self.version = 0  # counts the changes: the research driver re-reads the counts only after one
        store.on_rollback(self._mark_stale)
        self.load()

    def load(self) -> None:
        self.counts = {r["key"]: int(r["value"] or 0) for r in self.store.query("SELECT key, value FROM counters")}
        self.version = getattr(self, "version", 0) + 1
        self._stale = False

    def _mark_stale(self) -> None:
        self._stale = True

    def view(self) -> Mapping[str, int]:
        """The counts as they stand (reloaded first if a rollback left them stale)."""
        if self._stale:
            self.load()
        return self.counts

    def day_counts(self, day: str, symbol: str) -> tuple[int, int]:
        """(the ticker's count, the count in all) on ``day``."""
        counts = self.view()
        return counts.get(cap_key(day, symbol), 0), counts.get(cap_key(day, GLOBAL), 0)

    def incr(self, key: str, by: int = 1) -> int:
        counts = self.view()
        self.store.execute(
            "INSERT INTO counters(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=value+excluded.value",
            (key, by),
        )
        counts[key] = counts.get(key, 0) + by
        self.version += 1
        return counts[key]

    def count(self, day: str, symbol: str) -> None:
        """One more actionable signal of ``symbol`` on ``day``."""
        self.incr(cap_key(day, symbol))
        self.incr(cap_key(day, GLOBAL))

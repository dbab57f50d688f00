"""The engine's working state in memory, restored from SQLite at start (rules §1, "State").

The tick reads its book, protections, cap counts, locks, basket streaks, token buckets and the tier scheduler's
times from here; each is written through to SQLite inside the tick's transaction. This module restores what a
restart needs (last processed times, latest scores, token buckets, the fill cursor, the cadence of stop checks and
equity snapshots), reloads the in-memory parts when a tick's writes were rolled back, and saves the tick state.
"""

from __future__ import annotations

import json

from core.engine.scheduler import TierScheduler
from core.services.buckets import LocalTokenBuckets
from core.state.baskets import BasketStreaks
from core.state.book import Book
from core.state.caps import CapCounters
from core.state.decisions import restore_scheduler_state
from core.state.kv import KVStore
from core.state.locks import SymbolLocks
from core.state.protections import Protections
from core.state.store import Store


class EngineState:
    """Everything a tick reads and changes, other than the live parameters (``LiveParameters``)."""

    def __init__(self, store: Store, kv: KVStore, buckets: LocalTokenBuckets, scheduler: TierScheduler) -> None:
        self.store = store
        self.kv = kv
        self.locks = SymbolLocks(kv)
        self.buckets = buckets
        self.scheduler = scheduler
        self.book: Book = store.book  # positions, live intents, open orders: read from memory, written through
        self.protections = Protections(store)  # the protections table in memory, written through
        self.caps = CapCounters(store)  # the RTH cap counters in memory, written through
        self.baskets = BasketStreaks(store)
        self.latest_scores: dict[str, tuple[float, float]] = {}  # symbol -> (POSIX s, score)
        self.fill_cursor = 0
        self.last_stop_check: float | None = None
        self.last_equity_minute: int | None = None
        self.restore()

    def restore(self) -> None:
        """Rebuild from SQLite: last processed times and latest scores per symbol, the buckets, the cadences."""
        last, latest = restore_scheduler_state(self.store)
        self.scheduler.last_processed.update(last)
        self.latest_scores.update(latest)
        saved = self.store.get_meta("token_buckets")
        if saved:
            self.buckets.restore(json.loads(saved))
        self.fill_cursor = int(self.store.get_meta("fill_cursor") or 0)  # broker fills taken in so far
        cadence = json.loads(self.store.get_meta("tick_cadence") or "{}")
        self.last_stop_check = cadence.get("stop_check")
        self.last_equity_minute = cadence.get("equity_minute")

    def reload_after_rollback(self) -> None:
        """The tick's uncommitted writes were rolled back: the in-memory state follows the journal again."""
        self.book.load()
        self.protections.load()
        self.caps.load()
        self.fill_cursor = int(self.store.get_meta("fill_cursor") or 0)

    def save_tick_state(self) -> None:
        """What a restart needs to carry on as if it never stopped: the token buckets (levels and this minute's
        counts) and the cadence of the stop checks and equity snapshots. Written with the tick it belongs to."""
        self.store.set_meta("token_buckets", json.dumps(self.buckets.dump()))
        self.store.set_meta("tick_cadence", json.dumps({"stop_check": self.last_stop_check,
                                                        "equity_minute": self.last_equity_minute}))

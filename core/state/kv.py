"""TTL key store: cooldowns, direction locks, ETF locks and idempotency keys.

The embedded backend is a SQLite table (survives restarts). Expiry is judged
against the ``now`` the caller passes, so replay and live behave the same.
The Redis backend (``SET NX EX``) slots in behind the same protocol.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from core.state.store import Store


class KVStore(Protocol):
    def get(self, key: str, now: datetime) -> str | None: ...
    def entry(self, key: str, now: datetime) -> tuple[str, float] | None: ...
    def set(self, key: str, value: str, ttl_s: float, now: datetime) -> None: ...
    def set_nx(self, key: str, value: str, ttl_s: float, now: datetime) -> bool: ...
    def delete(self, key: str) -> None: ...
    def ttl(self, key: str, now: datetime) -> float | None: ...


class SqliteKV:
    """SQLite-backed TTL keys with a write-through memory mirror.

    The engine is the only writer (guarded by a file lock on the database), so
    the mirror is exact; it spares a SELECT per gate check on the hot path.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._mem: dict[str, tuple[str, float]] = {
            r["key"]: (r["value"], r["expires_at"]) for r in store.query("SELECT key, value, expires_at FROM kv")
        }
        self.version = 0  # counts the changes: the research driver re-reads its keys only after one

    def get(self, key: str, now: datetime) -> str | None:
        item = self._mem.get(key)
        if item is None:
            return None
        if item[1] <= now.timestamp():
            return None
        return item[0]

    def entry(self, key: str, now: datetime) -> tuple[str, float] | None:
        """(value, expires at in POSIX seconds) of a live key, or None."""
        item = self._mem.get(key)
        if item is None or item[1] <= now.timestamp():
            return None
        return item

    def ttl(self, key: str, now: datetime) -> float | None:
        item = self._mem.get(key)
        if item is None or item[1] <= now.timestamp():
            return None
        return item[1] - now.timestamp()

    def set(self, key: str, value: str, ttl_s: float, now: datetime) -> None:
        expires = now.timestamp() + ttl_s
        self._mem[key] = (value, expires)
        self.version += 1
        self.store.upsert("kv", {"key": key, "value": value, "expires_at": expires})

    def set_nx(self, key: str, value: str, ttl_s: float, now: datetime) -> bool:
        if self.get(key, now) is not None:
            return False
        self.set(key, value, ttl_s, now)
        return True

    def delete(self, key: str) -> None:
        self._mem.pop(key, None)
        self.version += 1
        self.store.execute("DELETE FROM kv WHERE key=?", (key,))

    def purge_expired(self, now: datetime) -> int:
        t = now.timestamp()
        dead = [k for k, (_, exp) in self._mem.items() if exp <= t]
        for k in dead:
            del self._mem[k]
        self.version += 1
        self.store.execute("DELETE FROM kv WHERE expires_at <= ?", (t,))
        return len(dead)

    def keys(self, prefix: str, now: datetime) -> dict[str, str]:
        t = now.timestamp()
        return {k: v for k, (v, exp) in self._mem.items() if k.startswith(prefix) and exp > t}

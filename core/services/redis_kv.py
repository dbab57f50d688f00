"""TTL key store on Redis: cooldowns, direction locks, ETF locks and idempotency keys shared by every engine process.

Expiry is judged against the ``now`` the caller passes, never the wall clock: replays and the simulated market run on
their own clock (a year away from the wall, or 60x faster), so Redis's own expiry cannot decide whether a key is live.
Each key is stored as the string ``"{expires_at}|{value}"`` (``expires_at`` a POSIX timestamp on the caller's clock)
and is live while ``expires_at > now`` -- the same rule as ``SqliteKV``. The old system's ``SET NX EX`` becomes a Lua
script that compares the stored expiry with the caller's ``now`` inside Redis, so the check and the write are one
atomic step across processes.

A Redis expiry (PX) is still set, but only as garbage collection, and always far longer than the logical TTL (see
``gc_ms``), so it never drops a key that is still live on the caller's clock.

Fallback: every call goes through ``RedisLink.run`` with the same call on ``local`` (the engine's ``SqliteKV``) as
the fallback. While Redis is up, writes also go to ``local`` (write-through), so an outage starts from this process's
own locks and cooldowns. While Redis is down, reads and writes use ``local`` only: locks then hold within this
process only, and keys written during the outage are not copied to Redis when it returns.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import redis

from core.services.redis_link import RedisLink
from core.state.kv import KVStore

# Garbage-collection expiry: GC_FACTOR x the logical TTL, at least GC_FLOOR_S. The live engine's clock runs at wall
# speed and replays run as fast or faster, so the logical expiry always comes first; the one-day floor keeps short
# keys (cooldowns, 90 s ETF locks) through a paused replay or a clock stepped slowly by hand.
GC_FACTOR = 10.0
GC_FLOOR_S = 86_400.0

# KEYS[1]: the key. ARGV: now, the encoded "expires|value", the GC expiry in ms.
# Absent, unreadable, or logically expired on the caller's clock (expires <= now): write and return 1; else 0.
_SET_NX_LUA = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local sep = string.find(cur, '|', 1, true)
  if sep then
    local exp = tonumber(string.sub(cur, 1, sep - 1))
    if exp and exp > tonumber(ARGV[1]) then
      return 0
    end
  end
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"""

# KEYS: candidate keys. ARGV[1]: now. Deletes those logically expired, re-checked inside the script so a key
# rewritten by another process between the SCAN and this call is kept.
_PURGE_LUA = """
local n = 0
for _, k in ipairs(KEYS) do
  local cur = redis.call('GET', k)
  if cur then
    local sep = string.find(cur, '|', 1, true)
    local exp = sep and tonumber(string.sub(cur, 1, sep - 1))
    if (not exp) or exp <= tonumber(ARGV[1]) then
      redis.call('DEL', k)
      n = n + 1
    end
  end
end
return n
"""

_SCAN_COUNT = 500


def gc_ms(ttl_s: float) -> int:
    """The Redis (garbage-collection) expiry for a logical TTL: never shorter than it, always positive."""
    return int(math.ceil(max(ttl_s * GC_FACTOR, GC_FLOOR_S) * 1000))


def encode(value: str, expires_at: float) -> str:
    # repr round-trips the float exactly, and Lua's tonumber reads it back to the same double
    return f"{expires_at!r}|{value}"


def decode(raw: str | None) -> tuple[float, str] | None:
    """``(expires_at, value)``, or None for a missing or unreadable entry (treated as absent, as in the Lua)."""
    if raw is None:
        return None
    exp_s, sep, value = raw.partition("|")
    if not sep:
        return None
    try:
        return float(exp_s), value
    except ValueError:
        return None


def _glob_escape(s: str) -> str:
    """Escape SCAN MATCH's glob characters so a key prefix matches literally."""
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in s)


def _chunks(items: list[str], n: int) -> Iterable[list[str]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


class RedisKV:
    """KVStore on Redis, shared by every engine process; expiry on the caller's clock."""

    def __init__(self, link: RedisLink, local: KVStore, *, prefix: str = "tt:kv") -> None:
        self.link = link
        self.local = local
        self.prefix = prefix
        self._ns = f"{prefix}:"
        # register_script does no I/O; the Script object runs EVALSHA and reloads itself after a server restart
        self._set_nx_script = link.client.register_script(_SET_NX_LUA)
        self._purge_script = link.client.register_script(_PURGE_LUA)

    def _k(self, key: str) -> str:
        return self._ns + key

    # ------------------------------------------------------------ KVStore
    def get(self, key: str, now: datetime) -> str | None:
        def op(c: redis.Redis) -> str | None:
            item = decode(c.get(self._k(key)))
            if item is None or item[0] <= now.timestamp():
                return None
            return item[1]

        return self.link.run(op, lambda: self.local.get(key, now))

    def entry(self, key: str, now: datetime) -> tuple[str, float] | None:
        def op(c: redis.Redis) -> tuple[str, float] | None:
            item = decode(c.get(self._k(key)))
            if item is None or item[0] <= now.timestamp():
                return None
            return item[1], item[0]

        return self.link.run(op, lambda: self.local.entry(key, now))

    def ttl(self, key: str, now: datetime) -> float | None:
        def op(c: redis.Redis) -> float | None:
            item = decode(c.get(self._k(key)))
            t = now.timestamp()
            if item is None or item[0] <= t:
                return None
            return item[0] - t

        return self.link.run(op, lambda: self.local.ttl(key, now))

    def set(self, key: str, value: str, ttl_s: float, now: datetime) -> None:
        def op(c: redis.Redis) -> None:
            c.set(self._k(key), encode(value, now.timestamp() + ttl_s), px=gc_ms(ttl_s))
            self.local.set(key, value, ttl_s, now)  # write-through: an outage starts from this process's keys

        self.link.run(op, lambda: self.local.set(key, value, ttl_s, now))

    def set_nx(self, key: str, value: str, ttl_s: float, now: datetime) -> bool:
        """Set only if absent or logically expired at ``now``; atomic across every process sharing the Redis."""
        def op(c: redis.Redis) -> bool:
            t = now.timestamp()
            won = bool(self._set_nx_script(keys=[self._k(key)], args=[repr(t), encode(value, t + ttl_s),
                                                                         gc_ms(ttl_s)], client=c))
            if won:
                self.local.set(key, value, ttl_s, now)
            return won

        return self.link.run(op, lambda: self.local.set_nx(key, value, ttl_s, now))

    def delete(self, key: str) -> None:
        def op(c: redis.Redis) -> None:
            c.delete(self._k(key))
            self.local.delete(key)  # else the local copy would come back to life in an outage

        self.link.run(op, lambda: self.local.delete(key))

    # ------------------------------------------------------------ SqliteKV extras
    def keys(self, prefix: str, now: datetime) -> dict[str, str]:
        """Live keys starting with ``prefix`` and their values (SCAN, so it does not block Redis)."""
        def op(c: redis.Redis) -> dict[str, str]:
            names = list(c.scan_iter(match=_glob_escape(self._k(prefix)) + "*", count=_SCAN_COUNT))
            t, out = now.timestamp(), {}
            for chunk in _chunks(names, _SCAN_COUNT):
                for name, raw in zip(chunk, c.mget(chunk), strict=True):
                    item = decode(raw)  # None when it vanished between SCAN and MGET
                    if item is not None and item[0] > t:
                        out[name[len(self._ns):]] = item[1]
            return out

        return self.link.run(op, lambda: self._local_call("keys", prefix, now, default={}))

    def purge_expired(self, now: datetime) -> int:
        """Delete keys logically expired at ``now`` (Redis's GC expiry would drop them later anyway).

        Returns how many Redis keys went (the local mirror is purged too), or the local count in an outage.
        """
        def op(c: redis.Redis) -> int:
            names = list(c.scan_iter(match=_glob_escape(self._ns) + "*", count=_SCAN_COUNT))
            n = sum(int(self._purge_script(keys=chunk, args=[repr(now.timestamp())], client=c))
                    for chunk in _chunks(names, _SCAN_COUNT))
            self._local_call("purge_expired", now, default=0)
            return n

        return self.link.run(op, lambda: self._local_call("purge_expired", now, default=0))

    def _local_call(self, name: str, *args: Any, default: Any) -> Any:
        # keys/purge_expired are not in the KVStore protocol: SqliteKV has them, a bare KVStore may not
        fn = getattr(self.local, name, None)
        return default if fn is None else fn(*args)

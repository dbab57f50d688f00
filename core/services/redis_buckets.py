"""Token buckets shared through Redis (rules §5; issue 8).

Same interface and semantics as ``LocalTokenBuckets`` (fixed calendar-minute windows, A 6 / B 3 / Reserve 1,
Bench draws from Reserve, tier A borrows a Reserve token only in the first ``borrow_window_s`` seconds of a
minute and only when allowed), but the tokens used in a minute are counted in Redis, so every process using
the same Redis and prefix shares one allocation. One Lua script decides and counts each request atomically:
two processes can never both take the last token.

Time always comes from the caller's ``now`` (replays and the simulated market run on their own clock); the
keys ``{prefix}:{minute}:{bucket}`` hold the tokens used in that minute and expire ``ttl_s`` wall seconds
after their last grant, so old minutes vanish. A simulated minute must therefore not last longer than
``ttl_s`` in wall time, or its count would vanish while it is still current.

While Redis is unreachable (``RedisLink`` switches), the embedded ``LocalTokenBuckets`` answers with the same
per-minute limits in this process. It is kept at the shared levels last seen from Redis, so a failover in the
middle of a minute continues from what was left rather than from a full bucket.
"""

from __future__ import annotations

import logging
import os
import socket
from collections import defaultdict
from datetime import datetime

import redis

from core.services.buckets import RESERVE, Grant, LocalTokenBuckets, dump_stats, minute_key, restore_stats
from core.services.redis_link import RedisLink

log = logging.getLogger(__name__)

# KEYS: 1 the requested bucket's used count, 2 Reserve's used count (the same key for Bench), 3 the borrow log
# ARGV: 1 minute, 2 bucket, 3 bucket capacity, 4 Reserve capacity, 5 second of the minute, 6 allow_borrow (0/1),
#       7 borrow window (s), 8 tier, 9 consumer id, 10 key TTL (s), 11 borrow log max length
# Returns {code, bucket used, Reserve used}: code 0 denied, 1 granted from the bucket, 2 borrowed from Reserve.
CONSUME_LUA = """
local cap = tonumber(ARGV[3])
local cap_reserve = tonumber(ARGV[4])
local ttl = tonumber(ARGV[10])
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used < cap then
  used = redis.call('INCR', KEYS[1])
  redis.call('EXPIRE', KEYS[1], ttl)
  local reserve_used = tonumber(redis.call('GET', KEYS[2]) or '0')
  return {1, used, reserve_used}
end
local reserve_used = tonumber(redis.call('GET', KEYS[2]) or '0')
if ARGV[8] == 'A' and ARGV[6] == '1' and tonumber(ARGV[5]) < tonumber(ARGV[7]) and reserve_used < cap_reserve then
  reserve_used = redis.call('INCR', KEYS[2])
  redis.call('EXPIRE', KEYS[2], ttl)
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[11], '*',
             'minute', ARGV[1], 'second', ARGV[5], 'consumer', ARGV[9], 'tier', ARGV[8])
  return {2, used, reserve_used}
end
return {0, used, reserve_used}
"""


class RedisTokenBuckets:
    """Same interface as LocalTokenBuckets (try_consume, remaining, dump, restore, drain_stats, current_stats,
    capacities, borrow_window_s, stats), shared by every process using the same Redis: one atomic Lua script
    (SCRIPT LOAD once, EVALSHA; on NoScriptError reload and retry once).

    ``local`` is the fallback bucket (made with the same capacities when not given); it belongs to this object:
    its levels follow the shared ones and its own stats are dropped (``stats`` here counts every call once,
    whichever backend answered). ``consumer`` names this process in the borrow log (default host-pid)."""

    def __init__(self, link: RedisLink, capacities: dict[str, int], borrow_window_s: int = 10, *,
                 prefix: str = "tt:bucket", local: LocalTokenBuckets | None = None, consumer: str | None = None,
                 ttl_s: int = 120, borrow_log_max: int = 10_000) -> None:
        self.link = link
        self.capacities = dict(capacities)
        self.borrow_window_s = borrow_window_s
        self.prefix = prefix
        self.local = local or LocalTokenBuckets(self.capacities, borrow_window_s)
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
        self.ttl_s = ttl_s
        self.borrow_log_max = borrow_log_max
        self.borrow_log_key = f"{prefix}:borrows"
        self._sha: str | None = None
        self.script_loads = 0
        # this process's counts, (minute, tier) -> [requested, granted, borrowed]: each engine persists its own
        self.stats: dict[tuple[int, str], list[int]] = defaultdict(lambda: [0, 0, 0])

    def key(self, minute: int, bucket: str) -> str:
        return f"{self.prefix}:{minute}:{bucket}"

    # ------------------------------------------------------------ Redis side
    def _load(self, client: redis.Redis) -> str:
        self._sha = str(client.script_load(CONSUME_LUA))
        self.script_loads += 1
        return self._sha

    def _evalsha(self, client: redis.Redis, keys: list[str], args: list[object]) -> list[int]:
        sha = self._sha or self._load(client)
        try:
            res = client.evalsha(sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            # the server restarted or SCRIPT FLUSH ran: load it again, retry once (a second failure raises)
            res = client.evalsha(self._load(client), len(keys), *keys, *args)
        return [int(x) for x in res]

    def _consume_redis(self, client: redis.Redis, tier: str, bucket: str, m: int, second: int,
                       allow_borrow: bool, now: datetime) -> Grant:
        keys = [self.key(m, bucket), self.key(m, RESERVE), self.borrow_log_key]
        args: list[object] = [m, bucket, self.capacities.get(bucket, 0), self.capacities.get(RESERVE, 0), second,
                              int(allow_borrow), self.borrow_window_s, tier, self.consumer, self.ttl_s,
                              self.borrow_log_max]
        code, used, reserve_used = self._evalsha(client, keys, args)
        self._mirror(now, {bucket: used, RESERVE: reserve_used})
        if code == 1:
            return Grant(True, bucket)
        if code == 2:
            log.info("tier A borrowed a reserve token at second %d of minute %d (shared, consumer %s)",
                     second, m, self.consumer)
            return Grant(True, RESERVE, borrowed=True)
        return Grant(False, "")

    def _mirror(self, now: datetime, used: dict[str, int]) -> None:
        """Keep the fallback bucket at the shared levels, so a failover mid-minute grants no fresh minute."""
        left = self.local.remaining(now)  # rolls it to this minute first
        for bucket, n in used.items():
            if bucket in self.capacities:
                left[bucket] = max(0, self.capacities[bucket] - n)
        self.local.restore({"minute": minute_key(now), "left": left})

    # ------------------------------------------------------------ interface
    def try_consume(self, tier: str, now: datetime, *, allow_borrow: bool) -> Grant:
        m = minute_key(now)
        second = int(now.timestamp()) % 60
        bucket = RESERVE if tier == "Bench" else tier
        st = self.stats[(m, tier)]
        st[0] += 1

        def fallback() -> Grant:
            grant = self.local.try_consume(tier, now, allow_borrow=allow_borrow)
            self.local.stats.clear()  # counted once, in self.stats
            return grant

        grant = self.link.run(lambda c: self._consume_redis(c, tier, bucket, m, second, allow_borrow, now),
                              fallback)
        if grant.granted:
            st[1] += 1
            if grant.borrowed:
                st[2] += 1
        return grant

    def remaining(self, now: datetime) -> dict[str, int]:
        m = minute_key(now)
        buckets = list(self.capacities)

        def op(c: redis.Redis) -> dict[str, int]:
            used = c.mget([self.key(m, b) for b in buckets])
            counts = {b: int(u or 0) for b, u in zip(buckets, used, strict=True)}
            self._mirror(now, counts)
            return {b: max(0, self.capacities[b] - counts[b]) for b in buckets}

        return self.link.run(op, lambda: self.local.remaining(now))

    def dump(self) -> dict[str, object]:
        """The fallback bucket's state (Redis itself keeps the shared counts) and this process's counts not yet
        persisted."""
        return {**self.local.dump(), "stats": dump_stats(self.stats)}

    def restore(self, saved: dict[str, object]) -> None:
        """The fallback bucket and this process's unpersisted counts: Redis already holds the shared counts."""
        self.local.restore({k: v for k, v in saved.items() if k != "stats"})
        restore_stats(self.stats, saved)

    def drain_stats(self, now: datetime) -> list[tuple[int, str, int, int, int]]:
        """This process's counts of minutes that have ended, removed from memory (the engine persists them)."""
        current = minute_key(now)
        done = sorted(k for k in self.stats if k[0] < current)
        return [(m, t, *self.stats.pop((m, t))) for m, t in done]  # type: ignore[misc]

    def current_stats(self, now: datetime) -> list[tuple[int, str, int, int, int]]:
        current = minute_key(now)
        return [(m, t, *v) for (m, t), v in self.stats.items() if m == current]  # type: ignore[misc]

    def borrow_log(self, count: int = 100) -> list[dict[str, str]]:
        """The latest reserve borrows of every process, oldest first; [] while Redis is unreachable."""
        def op(c: redis.Redis) -> list[dict[str, str]]:
            entries = c.xrevrange(self.borrow_log_key, count=count)
            return [{"id": mid, **fields} for mid, fields in reversed(entries)]

        return self.link.run(op, list)

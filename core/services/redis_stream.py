"""The signal stream ``signals.raw`` on Redis Streams (rules §1; issue 8).

With ``REDIS_URL`` set, each scored observation is published to ``signals.raw`` and decided by a member of
a consumer group (``REDIS_GROUP``, one per account engine; each process is a consumer). A message is
acknowledged only after its decision row is stored, so the pending entries of a consumer that crashed are
claimed by another (``XAUTOCLAIM``) and decided there; the decision log's unique (symbol, ts) row makes a
message that was stored but not acknowledged a no-op the second time: nothing is processed twice.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any, TypeVar

import redis

from core.services.redis_link import RedisLink

STREAM = "signals.raw"
T = TypeVar("T")


class SignalStream:
    def __init__(self, link: RedisLink, group: str = "engine", consumer: str | None = None, *,
                 maxlen: int = 100_000) -> None:
        self.link = link
        self.group = group
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
        self.maxlen = maxlen
        self._group_ready = False

    def _ensure_group(self, client: redis.Redis) -> None:
        if self._group_ready:
            return
        try:
            client.xgroup_create(STREAM, self.group, id="0", mkstream=True)
        except redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise
        self._group_ready = True

    def _grouped(self, c: redis.Redis, fn: Callable[[redis.Redis], T]) -> T:
        """Run ``fn`` with the group in place; a restarted (empty) Redis lost it: create it again, once."""
        self._ensure_group(c)
        try:
            return fn(c)
        except redis.ResponseError as e:
            if "NOGROUP" not in str(e):
                raise
            self._group_ready = False
            self._ensure_group(c)
            return fn(c)

    def publish(self, fields: dict[str, Any]) -> str | None:
        """Append one observation; None when Redis is unreachable (the caller then decides in-process)."""
        def op(c: redis.Redis) -> str:
            return str(self._grouped(c, lambda c: c.xadd(
                STREAM, {k: "" if v is None else str(v) for k, v in fields.items()}, maxlen=self.maxlen,
                approximate=True)))
        return self.link.run(op, lambda: None)

    def read(self, count: int = 200) -> list[tuple[str, dict[str, str]]]:
        """New messages for this consumer (they stay pending until acknowledged)."""
        def op(c: redis.Redis) -> list[tuple[str, dict[str, str]]]:
            out = self._grouped(c, lambda c: c.xreadgroup(self.group, self.consumer, {STREAM: ">"}, count=count))
            return [(mid, fields) for _stream, msgs in (out or []) for mid, fields in msgs]
        return self.link.run(op, list)

    def claim_stale(self, min_idle_ms: int, count: int = 200) -> list[tuple[str, dict[str, str]]]:
        """Messages another consumer read but never acknowledged for ``min_idle_ms``: this one takes them."""
        def op(c: redis.Redis) -> list[tuple[str, dict[str, str]]]:
            res = self._grouped(c, lambda c: c.xautoclaim(STREAM, self.group, self.consumer, min_idle_time=min_idle_ms,
                                                          start_id="0-0", count=count))
            return [(mid, fields) for mid, fields in res[1] if fields]  # deleted entries come back empty
        return self.link.run(op, list)

    def ack(self, ids: list[str]) -> int:
        if not ids:
            return 0
        return int(self.link.run(lambda c: c.xack(STREAM, self.group, *ids), lambda: 0))

    def pending_count(self) -> int:
        def op(c: redis.Redis) -> int:
            return int(self._grouped(c, lambda c: c.xpending(STREAM, self.group))["pending"])
        return self.link.run(op, lambda: 0)

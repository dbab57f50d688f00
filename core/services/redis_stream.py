"""The signal stream ``signals.raw`` on Redis Streams (rules §1; issue 8).

With ``REDIS_URL`` set, each scored observation is published to ``signals.raw`` and decided by a member of
a consumer group (``REDIS_GROUP``, one per account engine; each process is a consumer). A message is
acknowledged only after its decision row is stored, so the pending entries of a consumer that crashed are
claimed by another (``XAUTOCLAIM``) and decided there; the decision log's unique (symbol, ts) row makes a
message that was stored but not acknowledged a no-op the second time: nothing is processed twice.

Redis is reachable by more than this engine, so a message is untrusted until proven otherwise (issue 30): each
carries an HMAC-SHA256 over its fields with the shared ``REDIS_SIGNING_KEY``; a reader drops (acknowledges and moves
to ``signals.dead`` with the reason) any message that is unsigned, mis-signed or malformed, and the engine prices
and sizes from its own feed, never from a message.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
from collections.abc import Callable
from typing import Any, TypeVar

import redis

from core.services.redis_link import RedisLink

STREAM = "signals.raw"
DEAD = "signals.dead"  # refused messages, with the reason, for a person to look at
SIG = "sig"
T = TypeVar("T")


def signature(key: bytes, fields: dict[str, str]) -> str:
    """HMAC-SHA256 over the fields (without the signature), in name order, as hex."""
    body = "\n".join(f"{k}={fields[k]}" for k in sorted(fields) if k != SIG)
    return hmac.new(key, body.encode(), hashlib.sha256).hexdigest()


class SignalStream:
    def __init__(self, link: RedisLink, group: str = "engine", consumer: str | None = None, *,
                 signing_key: bytes, maxlen: int = 100_000) -> None:
        if not signing_key:
            raise ValueError("a signal stream needs a signing key (REDIS_SIGNING_KEY)")
        self.key = signing_key
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
        body = {k: "" if v is None else str(v) for k, v in fields.items() if k != SIG}
        body[SIG] = signature(self.key, body)

        def op(c: redis.Redis) -> str:
            return str(self._grouped(c, lambda c: c.xadd(STREAM, body, maxlen=self.maxlen, approximate=True)))
        return self.link.run(op, lambda: None)

    def verified(self, fields: dict[str, str]) -> dict[str, str] | None:
        """The message's fields without its signature when the signature is this key's; None otherwise."""
        sig = fields.get(SIG)
        if not isinstance(sig, str) or not hmac.compare_digest(sig, signature(self.key, fields)):
            return None
        return {k: v for k, v in fields.items() if k != SIG}

    def dead_letter(self, mid: str, fields: dict[str, str], reason: str) -> None:
        """Acknowledge a refused message and keep it, with the reason, in ``signals.dead`` (capped)."""
        kept = {f"msg.{str(k)[:32]}": str(v)[:200] for k, v in list(fields.items())[:20] if k != SIG}

        def op(c: redis.Redis) -> None:
            c.xadd(DEAD, {"id": mid, "reason": reason[:300], "consumer": self.consumer, **kept}, maxlen=10_000,
                   approximate=True)
            c.xack(STREAM, self.group, mid)
        self.link.run(op, lambda: None)

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

"""One Redis connection with a fallback switch (rules §1, 5; issue 8).

Every Redis-backed component calls ``link.run(redis_op, local_op)``. While Redis answers, the Redis
operation runs; a connection error or timeout logs once, marks the link down and runs the local operation
instead (the embedded backends keep every limit at the same figures). While down, the link tries again
after a backoff (1 s, 2 s, ... 30 s) and switches back by itself when Redis answers a PING.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import redis

from core.secrets import mask_secrets, redact_url, url_secrets

log = logging.getLogger(__name__)
T = TypeVar("T")

CONNECTION_ERRORS: tuple[type[BaseException], ...] = (redis.ConnectionError, redis.TimeoutError, OSError)


def redacted_url(url: str) -> str:
    """The URL without its password or credential query values (core.secrets.redact_url)."""
    return redact_url(url)


class RedisLink:
    def __init__(self, url: str, *, socket_timeout_s: float = 0.5, retry_initial_s: float = 1.0,
                 retry_max_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.url = url
        self.client = redis.Redis.from_url(url, socket_timeout=socket_timeout_s,
                                           socket_connect_timeout=socket_timeout_s, decode_responses=True)
        self._clock = clock
        self._retry_initial, self._retry_max = retry_initial_s, retry_max_s
        self._lock = threading.Lock()
        self.up = True
        self.down_since: float | None = None
        self.last_error: str | None = None
        self._retry_at = 0.0
        self._delay = retry_initial_s
        self.failovers = 0
        self.recoveries = 0

    # ------------------------------------------------------------ state
    def failed(self, exc: BaseException) -> None:
        with self._lock:
            self.last_error = mask_secrets(f"{type(exc).__name__}: {exc}", extra=url_secrets(self.url))
            if self.up:  # log the switch once, not every call
                self.up = False
                self.down_since = self._clock()
                self.failovers += 1
                self._delay = self._retry_initial
                log.warning("Redis at %s unreachable (%s): using the local backends until it answers again",
                            redacted_url(self.url), self.last_error)
            else:
                self._delay = min(self._retry_max, self._delay * 2)
            self._retry_at = self._clock() + self._delay

    def usable(self) -> bool:
        """Up, or down with its retry time reached and a PING answered (then up again)."""
        if self.up:
            return True
        if self._clock() < self._retry_at:
            return False
        try:
            self.client.ping()
        except CONNECTION_ERRORS as e:
            self.failed(e)
            return False
        with self._lock:
            self.up, self.down_since = True, None
            self.recoveries += 1
        log.warning("Redis at %s is back: shared backends in use again", redacted_url(self.url))
        return True

    def run(self, op: Callable[[redis.Redis], T], fallback: Callable[[], T]) -> T:
        if self.usable():
            try:
                return op(self.client)
            except CONNECTION_ERRORS as e:
                self.failed(e)
        return fallback()

    def status(self) -> dict[str, Any]:
        """For the heartbeat and the sidebar."""
        return {"backend": "redis" if self.up else "local (Redis unreachable)", "url": redacted_url(self.url),
                "up": self.up, "failovers": self.failovers, "recoveries": self.recoveries,
                "last_error": self.last_error}

"""Client-side limits of outside APIs: at most N requests in any sliding window of wall time (Alpaca's requests per
minute, SEC's 10 requests per second)."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable


class SlidingWindowLimit:
    """At most ``capacity`` acquisitions in any ``window_s`` seconds (a sliding window, wall time): the
    client-side limits of outside APIs (Alpaca's requests per minute, SEC's 10 requests per second).

    ``acquire`` holds the lock while it waits, so concurrent callers queue up and the window holds across
    threads; ``try_acquire`` never waits.
    """

    def __init__(self, capacity: int, window_s: float, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.capacity = capacity
        self.window_s = window_s
        self.clock = clock
        self._sleep = sleep
        self._stamps: deque[float] = deque()
        self._lock = threading.Lock()

    def _admit(self) -> float:
        """Take a slot now (0.0) or say how long until one frees; call with the lock held."""
        now = self.clock()
        while self._stamps and now - self._stamps[0] >= self.window_s:
            self._stamps.popleft()
        if len(self._stamps) < self.capacity:
            self._stamps.append(now)
            return 0.0
        return max(self._stamps[0] + self.window_s - now, 1e-6)  # a floor: rounding never spins on 0 s

    def try_acquire(self) -> bool:
        with self._lock:
            return self._admit() == 0.0

    def acquire(self) -> None:
        with self._lock:
            while (wait := self._admit()) > 0.0:
                self._sleep(wait)

    @property
    def used(self) -> int:
        with self._lock:
            t = self.clock()
            return sum(1 for s in self._stamps if t - s < self.window_s)

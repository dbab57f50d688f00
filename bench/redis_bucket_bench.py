"""Token-bucket benchmark: acquisitions per second, LocalTokenBuckets vs RedisTokenBuckets (one process).

Starts its own throw-away redis-server on a free 127.0.0.1 port. Both backends get the real capacities
(A 6, B 3, Reserve 1) and the same request pattern: each simulated minute asks for exactly its 10 tokens
(6 A, 3 B, 1 Bench), then the clock moves to the next minute, so the "grant" row measures the cost of a
granted acquisition (for Redis: one EVALSHA round trip over loopback with its INCR/EXPIRE), never a denial.
The "denied" row asks again in one exhausted minute: the cost of a refusal (Redis: reads only).
A benchmark, not a test: `python bench/redis_bucket_bench.py --seconds 3`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from core.services.buckets import LocalTokenBuckets, TokenBuckets  # noqa: E402
from core.services.redis_buckets import RedisTokenBuckets  # noqa: E402
from core.services.redis_link import RedisLink  # noqa: E402
from tests.fakes.redis_server import RedisServer  # noqa: E402

CAPS = {"A": 6, "B": 3, "Reserve": 1}
PATTERN = ["A"] * 6 + ["B"] * 3 + ["Bench"]  # one minute's whole allocation
T0 = datetime(2025, 3, 10, 14, 0, 0, tzinfo=UTC)


def rate(step: Callable[[int], bool], seconds: float) -> tuple[float, int]:
    """Calls of step(i) per second over about ``seconds``; every call must return True (checked)."""
    n, wrong = 0, 0
    t0 = time.perf_counter()
    deadline = t0 + seconds
    while True:
        for _ in range(100):  # check the clock every 100 calls, not every call
            if not step(n):
                wrong += 1
            n += 1
        if time.perf_counter() >= deadline:
            break
    return n / (time.perf_counter() - t0), wrong


def grant_step(b: TokenBuckets) -> Callable[[int], bool]:
    def step(i: int) -> bool:
        minute, k = divmod(i, len(PATTERN))
        now = T0 + timedelta(minutes=minute, seconds=30 + k)  # seconds 30-39: no borrowing involved
        return b.try_consume(PATTERN[k], now, allow_borrow=True).granted
    return step


def denied_step(b: TokenBuckets) -> Callable[[int], bool]:
    now = T0 - timedelta(minutes=1, seconds=-45)
    for tier in PATTERN:  # exhaust that minute first
        b.try_consume(tier, now, allow_borrow=False)

    def step(i: int) -> bool:
        return not b.try_consume(PATTERN[i % len(PATTERN)], now, allow_borrow=False).granted
    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="run time of each measurement")
    args = ap.parse_args()
    srv = RedisServer().start()
    try:
        link = RedisLink(srv.url)
        rows = []
        for name, make_step in (("grant", grant_step), ("denied", denied_step)):
            link.client.flushdb()
            local_rate, local_wrong = rate(make_step(LocalTokenBuckets(CAPS)), args.seconds)
            redis_rate, redis_wrong = rate(make_step(RedisTokenBuckets(link, CAPS, prefix="bench")), args.seconds)
            if local_wrong or redis_wrong:
                raise SystemExit(f"{name}: unexpected outcomes local={local_wrong} redis={redis_wrong}")
            rows.append((name, local_rate, redis_rate))
        if not link.up or link.failovers:
            raise SystemExit("Redis went away during the benchmark: the figures are not Redis's")
        print(f"redis-server {srv.binary} on 127.0.0.1:{srv.port}, {args.seconds:g} s per measurement, one process")
        print(f"{'path':<8} {'local acq/s':>14} {'redis acq/s':>14} {'local/redis':>12}")
        for name, lr, rr in rows:
            print(f"{name:<8} {lr:>14,.0f} {rr:>14,.0f} {lr / rr:>11.1f}x")
        print(f"redis_grant_per_s={int(rows[0][2])} local_grant_per_s={int(rows[0][1])} "
              f"redis_grant_us={1e6 / rows[0][2]:.1f}")
    finally:
        srv.cleanup()


if __name__ == "__main__":
    main()

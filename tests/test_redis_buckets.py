"""RedisTokenBuckets (core/services/redis_buckets.py) against a real redis-server: the same grants as LocalTokenBuckets,
shared limits across OS processes, the local fallback while Redis is down, and the script cache flushed."""

from __future__ import annotations

import multiprocessing as mp
import random
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import redis

from core.services.buckets import LocalTokenBuckets, minute_key
from core.services.redis_buckets import RedisTokenBuckets
from core.services.redis_link import RedisLink
from tests.fakes.redis_server import RedisServer, free_port

CAPS = {"A": 6, "B": 3, "Reserve": 1}
T0 = datetime(2025, 3, 10, 14, 0, 0, tzinfo=UTC)  # second 0 of a minute
PROCS = 4
MINUTES = 3


def at(minute: int, second: int) -> datetime:
    return T0 + timedelta(minutes=minute, seconds=second)


def grants_of(b: LocalTokenBuckets | RedisTokenBuckets, calls: list[tuple[str, datetime, bool]]) -> list[tuple]:
    return [(g.granted, g.source, g.borrowed) for g in
            (b.try_consume(tier, now, allow_borrow=allow) for tier, now, allow in calls)]


# ---------------------------------------------------------------- single process: same grants as the local buckets
SCRIPT: list[tuple[str, datetime, bool]] = (
    # minute 0: A's 6, a denied borrow (not allowed), a borrow at second 8, nothing left for A or Bench; B's 3
    [("A", at(0, s), True) for s in range(1, 7)]
    + [("A", at(0, 7), False), ("A", at(0, 8), True), ("A", at(0, 9), True), ("Bench", at(0, 20), True)]
    + [("B", at(0, 30), True)] * 4
    # minute 1: A's 6, no borrow at second 12 (outside the window), so Bench gets Reserve; then nothing for Bench
    + [("A", at(1, 0), True)] * 6 + [("A", at(1, 12), True), ("Bench", at(1, 30), True), ("Bench", at(1, 31), True)]
    # minute 2: Bench first takes Reserve, so A cannot borrow at second 5
    + [("Bench", at(2, 2), True)] + [("A", at(2, 3), True)] * 6 + [("A", at(2, 5), True)]
    # minute 3: B never borrows, even early; a borrow at second 9 (the last second of the window); minute 4: none
    # at second 10
    + [("B", at(3, 1), True)] * 4 + [("A", at(3, 9), True)] * 8 + [("A", at(4, 10), True)] * 8
    # an unknown tier is denied by both
    + [("C", at(4, 11), True)]
)
EXPECTED_BORROWS = [(minute_key(at(0, 0)), 8), (minute_key(at(3, 0)), 9)]


def test_single_process_grants_match_local_buckets(redis_url: str) -> None:
    local = LocalTokenBuckets(CAPS)
    rb = RedisTokenBuckets(RedisLink(redis_url), CAPS, consumer="solo")
    want, got = grants_of(local, SCRIPT), grants_of(rb, SCRIPT)
    assert got == want
    # and the local buckets do what the script's comments say (both could be wrong the same way)
    by_minute = Counter((minute_key(now), g[1]) for (_t, now, _a), g in zip(SCRIPT, got, strict=True) if g[0])
    for minute in range(5):
        m = minute_key(at(minute, 0))
        assert by_minute[(m, "A")] == 6
        assert by_minute[(m, "Reserve")] == (0 if minute == 4 else 1)
    assert by_minute[(minute_key(at(0, 0)), "B")] == 3
    assert [g for g in got if g[2]] == [(True, "Reserve", True)] * 2
    # every borrow is in the shared log with its minute and second
    logged = [(int(e["minute"]), int(e["second"])) for e in rb.borrow_log()]
    assert logged == EXPECTED_BORROWS
    assert {e["consumer"] for e in rb.borrow_log()} == {"solo"}
    end = at(5, 0)
    assert rb.current_stats(at(4, 59)) == local.current_stats(at(4, 59))
    assert rb.drain_stats(end) == local.drain_stats(end)
    assert rb.stats == {} and local.stats == {}


def test_random_sequence_matches_local_buckets_and_keys_expire(redis_url: str) -> None:
    rnd = random.Random(11)
    calls, t = [], at(0, 0)
    for _ in range(600):  # about 10 minutes, several requests a second
        t += timedelta(seconds=rnd.choice([0, 0, 1, 2, 3]))
        calls.append((rnd.choice(["A", "A", "B", "Bench"]), t, rnd.random() < 0.7))
    local = LocalTokenBuckets(CAPS)
    rb = RedisTokenBuckets(RedisLink(redis_url), CAPS)
    for tier, now, allow in calls:
        assert rb.try_consume(tier, now, allow_borrow=allow) == local.try_consume(tier, now, allow_borrow=allow)
        assert rb.remaining(now) == local.remaining(now)
    assert rb.dump() == local.dump()
    assert rb.drain_stats(t + timedelta(minutes=1)) == local.drain_stats(t + timedelta(minutes=1))
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    key = rb.key(minute_key(t), "A")
    assert 0 < r.ttl(key) <= 120  # old minutes vanish by themselves
    assert int(r.get(key)) == CAPS["A"] - rb.remaining(t)["A"]


# ---------------------------------------------------------------- 4 OS processes share one allocation
def hammer(url: str, idx: int, barrier, out) -> None:  # noqa: ANN001 (spawn target: multiprocessing proxies)
    link = RedisLink(url, socket_timeout_s=5.0)
    rb = RedisTokenBuckets(link, CAPS, consumer=f"worker-{idx}")
    grants = []
    for minute in range(MINUTES):
        barrier.wait(timeout=60)  # all 4 start each minute together: the most contention for its last tokens
        for second in range(60):
            now = at(minute, second)
            for _ in range(2):  # 4 processes x 2 x 60 s: far more requests than the 10 tokens of a minute
                for tier in ("A", "B", "Bench"):
                    g = rb.try_consume(tier, now, allow_borrow=True)
                    if g.granted:
                        grants.append((minute_key(now), second, tier, g.source, g.borrowed))
    stats = rb.drain_stats(at(MINUTES, 0))
    out.put((idx, grants, stats, link.failovers))


def test_four_processes_never_exceed_the_shared_allocation(redis_url: str) -> None:
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(PROCS), ctx.Queue()
    procs = [ctx.Process(target=hammer, args=(redis_url, i, barrier, out)) for i in range(PROCS)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    grants = [g for _idx, gs, _st, _f in results for g in gs]
    assert all(f == 0 for *_rest, f in results)  # Redis answered every call: no local fallback grants
    for _idx, gs, stats, _f in results:  # each process's own counts agree with what it was granted
        assert sum(s[3] for s in stats) == len(gs) and sum(s[4] for s in stats) == sum(g[4] for g in gs)
        assert sum(s[2] for s in stats) == MINUTES * 60 * 2 * 3
    borrows = []
    for minute in range(MINUTES):
        m = minute_key(at(minute, 0))
        mine = [g for g in grants if g[0] == m]
        by_source = Counter(g[3] for g in mine)
        assert by_source == {"A": 6, "B": 3, "Reserve": 1}, (minute, by_source)
        assert all(g[2] == "Bench" or (g[2] == "A" and g[4]) for g in mine if g[3] == "Reserve")
        borrows += [(m, g[1]) for g in mine if g[4]]
    assert all(second < 10 for _m, second in borrows)
    rb = RedisTokenBuckets(RedisLink(redis_url), CAPS)
    logged = rb.borrow_log(1000)
    assert sorted((int(e["minute"]), int(e["second"])) for e in logged) == sorted(borrows)
    assert all(int(e["second"]) < 10 and e["consumer"].startswith("worker-") for e in logged)


# ---------------------------------------------------------------- Redis down: the local bucket, then back
def test_fallback_to_local_buckets_while_redis_is_down_and_back(redis_server: RedisServer, redis_url: str) -> None:
    link = RedisLink(redis_url, retry_initial_s=0.05, retry_max_s=0.2)
    rb = RedisTokenBuckets(link, CAPS)
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        # minute 0 through Redis: 4 of A's 6, Reserve taken by Bench
        assert all(rb.try_consume("A", at(0, 20), allow_borrow=True).granted for _ in range(4))
        assert rb.try_consume("Bench", at(0, 20), allow_borrow=True).source == "Reserve"
        assert r.get(rb.key(minute_key(at(0, 0)), "A")) == "4"
        redis_server.stop()
        # the rest of minute 0 from the local bucket, at the shared levels last seen: 2 A, no Reserve, 3 B
        assert sum(rb.try_consume("A", at(0, 30), allow_borrow=True).granted for _ in range(5)) == 2
        assert not link.up
        assert not rb.try_consume("Bench", at(0, 30), allow_borrow=True).granted
        assert sum(rb.try_consume("B", at(0, 30), allow_borrow=True).granted for _ in range(5)) == 3
        # a whole minute still down: 6 / 3 / 1, a borrow only in seconds 0-9
        a = [rb.try_consume("A", at(1, 5), allow_borrow=True) for _ in range(9)]
        assert sum(g.granted for g in a) == 7 and sum(g.borrowed for g in a) == 1
        assert sum(rb.try_consume("B", at(1, 30), allow_borrow=True).granted for _ in range(5)) == 3
        assert not rb.try_consume("Bench", at(1, 30), allow_borrow=True).granted
        assert rb.remaining(at(1, 40)) == {"A": 0, "B": 0, "Reserve": 0}
        assert rb.borrow_log() == []
        assert rb.local.stats == {}  # the fallback's own counts are dropped: each call is counted once
        # this process's counts went on either way
        assert rb.drain_stats(at(2, 0)) == [
            (minute_key(at(0, 0)), "A", 9, 6, 0), (minute_key(at(0, 0)), "B", 5, 3, 0),
            (minute_key(at(0, 0)), "Bench", 2, 1, 0),
            (minute_key(at(1, 0)), "A", 9, 7, 1), (minute_key(at(1, 0)), "B", 5, 3, 0),
            (minute_key(at(1, 0)), "Bench", 1, 0, 0)]
        redis_server.start()  # the same port, an empty server (its script cache too)
        for _ in range(200):  # wait for the link's retry time (no assertion on wall time)
            if link.usable():
                break
            time.sleep(0.05)
        assert link.up and link.recoveries == 1
        assert rb.try_consume("A", at(2, 20), allow_borrow=True).granted
        assert r.get(rb.key(minute_key(at(2, 0)), "A")) == "1"  # the grant came from Redis
        assert rb.remaining(at(2, 21)) == {"A": 5, "B": 3, "Reserve": 1}
    finally:
        if redis_server.proc is None or redis_server.proc.poll() is not None:
            redis_server.start()  # other tests share this server


def test_no_server_at_all_uses_restored_local_levels() -> None:
    rb = RedisTokenBuckets(RedisLink(f"redis://127.0.0.1:{free_port()}/0", retry_initial_s=60), CAPS)
    rb.restore({"minute": minute_key(at(0, 0)), "left": {"A": 1, "B": 0, "Reserve": 1}})
    grants = grants_of(rb, [("A", at(0, 3), True)] * 3 + [("B", at(0, 3), True), ("Bench", at(0, 3), True)])
    assert grants == [(True, "A", False), (True, "Reserve", True), (False, "", False), (False, "", False),
                      (False, "", False)]
    m = minute_key(at(0, 0))  # the levels, and this minute's counts (a restart keeps both)
    assert rb.dump() == {"minute": m, "left": {"A": 0, "B": 0, "Reserve": 0},
                         "stats": [[m, "A", 3, 2, 1], [m, "B", 1, 0, 0], [m, "Bench", 1, 0, 0]]}


# ---------------------------------------------------------------- the script cache flushed
def test_noscript_reloads_the_script_and_retries(redis_url: str) -> None:
    rb = RedisTokenBuckets(RedisLink(redis_url), CAPS)
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    assert rb.try_consume("B", at(0, 30), allow_borrow=False).granted
    assert rb.script_loads == 1
    sha = rb._sha
    r.script_flush()
    assert r.script_exists(sha) == [False]
    assert rb.try_consume("B", at(0, 31), allow_borrow=False).granted
    assert rb.script_loads == 2 and r.script_exists(sha) == [True]
    assert r.get(rb.key(minute_key(at(0, 0)), "B")) == "2"
    assert rb.link.up

"""RedisKV against a real redis-server: SqliteKV's semantics on the caller's clock, two-process set_nx races, and
the local fallback while Redis is down."""

from __future__ import annotations

import multiprocessing as mp
from datetime import UTC, datetime, timedelta
from typing import Any

import redis

from core.services.redis_kv import RedisKV, gc_ms
from core.services.redis_link import RedisLink
from core.state.kv import SqliteKV
from core.state.store import Store

T2030 = datetime(2030, 1, 2, 14, 30, tzinfo=UTC)  # a replay clock years away from the wall
HOUR = timedelta(hours=1)


def make_kv(url: str, **link_kw: Any) -> tuple[RedisKV, SqliteKV, RedisLink]:
    link = RedisLink(url, **link_kw)
    local = SqliteKV(Store(":memory:"))
    return RedisKV(link, local), local, link


def raw_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True)


# ------------------------------------------------------------ semantics
def scripted_ops() -> list[tuple[str, int, tuple[Any, ...]]]:
    """(method, step, args): the clock advances one hour per step from 2030, TTLs in clock seconds."""
    h = 3600.0
    return [
        ("get", 0, ("cooldown:AAPL",)),
        ("ttl", 0, ("cooldown:AAPL",)),
        ("set", 0, ("cooldown:AAPL", "1", 1.5 * h)),
        ("get", 0, ("cooldown:AAPL",)),
        ("ttl", 0, ("cooldown:AAPL",)),
        ("get", 1, ("cooldown:AAPL",)),  # half an hour left
        ("ttl", 1, ("cooldown:AAPL",)),
        ("get", 2, ("cooldown:AAPL",)),  # expired on the caller's clock (the wall has moved milliseconds)
        ("ttl", 2, ("cooldown:AAPL",)),
        ("set_nx", 2, ("etf_lock:XLK", "tech", 2 * h)),
        ("set_nx", 2, ("etf_lock:XLK", "other", 2 * h)),  # held
        ("set_nx", 3, ("etf_lock:XLK", "other", 2 * h)),  # still held (1 h left)
        ("get", 3, ("etf_lock:XLK",)),
        ("set_nx", 4, ("etf_lock:XLK", "other", 2 * h)),  # expiry == now: expired, as in SqliteKV
        ("get", 4, ("etf_lock:XLK",)),
        ("ttl", 5, ("etf_lock:XLK",)),
        ("set_nx", 6, ("cap:AAPL:2030-01-02:7", "1", 0.5 * h)),
        ("set_nx", 6, ("cap:AAPL:2030-01-02:7", "1", 0.5 * h)),
        ("set_nx", 7, ("cap:AAPL:2030-01-02:7", "1", 0.5 * h)),  # a new window after logical expiry
        ("set", 7, ("dirlock:MSFT", "-1", 3 * h)),
        ("set", 8, ("dirlock:MSFT", "1", 1 * h)),  # overwrite shortens it
        ("ttl", 8, ("dirlock:MSFT",)),
        ("get", 9, ("dirlock:MSFT",)),
        ("set", 9, ("event:AAPL", "ev|with|pipes é", 2 * h)),
        ("set", 9, ("event:MSFT", "ev2", 0.5 * h)),
        ("set", 9, ("event:[x]*?", "glob", 2 * h)),  # glob characters in a key
        ("set", 9, ("protect:AAPL", "trail", 2 * h)),
        ("set", 9, ("zero", "z", 0.0)),  # a zero TTL is dead on arrival
        ("get", 9, ("zero",)),
        ("set_nx", 9, ("zero", "z2", 0.0)),
        ("keys", 9, ("event:",)),
        ("keys", 10, ("event:",)),  # event:MSFT gone
        ("keys", 10, ("event:[x]",)),
        ("keys", 10, ("nothing:",)),
        ("delete", 10, ("event:AAPL",)),
        ("delete", 10, ("never-set",)),
        ("get", 10, ("event:AAPL",)),
        ("set_nx", 10, ("event:AAPL", "again", 1 * h)),
        ("keys", 10, ("",)),
        ("purge_expired", 10, ()),
        ("keys", 10, ("",)),
        ("purge_expired", 12, ()),
        ("keys", 12, ("",)),
    ]


def test_semantics_match_sqlite_kv_on_the_callers_clock(redis_url: str) -> None:
    kv, _, _ = make_kv(redis_url)
    ref = SqliteKV(Store(":memory:"))
    for method, step, args in scripted_ops():
        now = T2030 + step * HOUR
        kw = {} if method == "delete" else {"now": now}
        got, want = getattr(kv, method)(*args, **kw), getattr(ref, method)(*args, **kw)
        if isinstance(want, float):
            assert got is not None and abs(got - want) < 1e-6, (method, step, args, got, want)
        else:
            assert got == want, (method, step, args, got, want)
    assert kv.link.up  # the answers came from Redis, not the fallback


def test_keys_live_in_redis_and_are_shared_between_instances(redis_url: str) -> None:
    a, _, _ = make_kv(redis_url)
    b, b_local, _ = make_kv(redis_url)  # another engine process: its own link and local store
    a.set("cooldown:AAPL", "1", 600, T2030)
    assert b.get("cooldown:AAPL", T2030) == "1"
    assert b_local.get("cooldown:AAPL", T2030) is None  # b read it from Redis
    assert a.set_nx("etf_lock:XLK", "tech", 90, T2030)
    assert not b.set_nx("etf_lock:XLK", "other", 90, T2030 + timedelta(seconds=89))
    assert b.set_nx("etf_lock:XLK", "other", 90, T2030 + timedelta(seconds=90))
    assert a.get("etf_lock:XLK", T2030 + timedelta(seconds=100)) == "other"
    b.delete("cooldown:AAPL")
    assert a.get("cooldown:AAPL", T2030) is None
    assert raw_client(redis_url).get("tt:kv:etf_lock:XLK") is not None  # under the documented prefix


def test_redis_expiry_never_drops_a_live_key(redis_url: str) -> None:
    """Redis's PX is garbage collection only: longer than the logical TTL whatever the caller's clock."""
    kv, _, _ = make_kv(redis_url)
    r = raw_client(redis_url)
    past = datetime(2001, 3, 4, tzinfo=UTC)  # an expiry taken from the caller's clock would already be gone
    for i, ttl_s in enumerate([0.0, 1.0, 90.0, 3600.0, 3 * 86400.0]):
        for clock in (past, T2030):
            key = f"k{i}:{clock.year}"
            kv.set(key, "v", ttl_s, clock)
            pttl = r.pttl(f"tt:kv:{key}")
            assert pttl > 0 and pttl >= ttl_s * 1000, (key, ttl_s, pttl)
            assert pttl > gc_ms(ttl_s) - 60_000
            if ttl_s:
                assert kv.get(key, clock + timedelta(seconds=ttl_s / 2)) == "v"
    assert kv.set_nx("lock", "v", 90, past)
    assert r.pttl("tt:kv:lock") >= 90_000
    assert kv.get("lock", past + timedelta(seconds=89)) == "v"


# ------------------------------------------------------------ two-process race
N_KEYS = 200


def race_worker(url: str, name: str, barrier: Any, out: Any) -> None:
    """One engine process: its own link and store; every key raced behind the barrier."""
    kv, _, _ = make_kv(url, socket_timeout_s=5.0)
    wins: dict[str, list[str]] = {"etf": [], "cap": [], "etf2": []}
    for i in range(N_KEYS):
        etf_key = f"etf_lock:ETF{i}"
        cap_key = f"cap:SYM{i}:2030-01-02:{i}"
        barrier.wait()
        if kv.set_nx(etf_key, name, 90, T2030):
            wins["etf"].append(etf_key)
        barrier.wait()
        if kv.set_nx(cap_key, name, 90, T2030):
            wins["cap"].append(cap_key)
        barrier.wait()
        # after the logical expiry (one simulated minute later than its 90 s), the lock is up for grabs again
        if kv.set_nx(etf_key, name + "-2", 90, T2030 + timedelta(seconds=150)):
            wins["etf2"].append(etf_key)
    out.put((name, wins, kv.link.up))


def test_two_processes_race_set_nx_exactly_one_wins_each_key(redis_url: str) -> None:
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(2, timeout=60), ctx.Queue()
    procs = [ctx.Process(target=race_worker, args=(redis_url, name, barrier, out)) for name in ("p1", "p2")]
    for p in procs:
        p.start()
    try:
        results = {}
        for _ in procs:
            name, wins, up = out.get(timeout=120)
            assert up, f"{name} fell back to local during the race"
            results[name] = wins
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    assert all(p.exitcode == 0 for p in procs)
    kv, _, _ = make_kv(redis_url)
    for kind in ("etf", "cap", "etf2"):
        p1, p2 = set(results["p1"][kind]), set(results["p2"][kind])
        assert not p1 & p2, f"{kind}: both processes won {sorted(p1 & p2)[:5]}"
        assert len(p1 | p2) == N_KEYS, f"{kind}: {N_KEYS - len(p1 | p2)} keys won by nobody"
    # the stored value is the winner's: the loser did not overwrite it
    later = T2030 + timedelta(seconds=160)
    for key in results["p1"]["etf2"]:
        assert kv.get(key, later) == "p1-2"
    for key in results["p2"]["cap"]:
        assert kv.get(key, T2030) == "p2"


# ------------------------------------------------------------ fallback
class ManualClock:
    """The link's monotonic clock, moved by hand: the retry backoff without wall-time sleeps."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_fallback_to_local_while_redis_is_down_and_back(redis_server: Any, redis_url: str) -> None:
    clock = ManualClock()
    kv, local, link = make_kv(redis_url, retry_initial_s=0.05, socket_timeout_s=0.5, clock=clock)
    now = T2030
    kv.set("cooldown:AAPL", "1", 600, now)  # Redis, written through to local
    local.set("local-only", "L", 600, now)  # only in the local store
    assert kv.get("local-only", now) is None  # Redis answers while up
    try:
        redis_server.stop()
        # every call answers from local without raising
        assert kv.get("cooldown:AAPL", now) == "1"
        assert not link.up
        assert kv.get("local-only", now) == "L"
        assert abs(kv.ttl("cooldown:AAPL", now) - 600) < 1e-6
        assert not kv.set_nx("cooldown:AAPL", "2", 600, now)  # the write-through copy still holds the lock
        assert kv.set_nx("etf_lock:XLK", "tech", 90, now)
        assert not kv.set_nx("etf_lock:XLK", "other", 90, now)  # held within this process
        kv.set("during-outage", "D", 600, now)
        assert kv.keys("", now) == {"cooldown:AAPL": "1", "local-only": "L", "etf_lock:XLK": "tech",
                                    "during-outage": "D"}
        kv.delete("local-only")
        assert kv.get("local-only", now) is None
        assert kv.purge_expired(now + timedelta(seconds=100)) == 1  # etf_lock:XLK
        assert not link.up and link.failovers == 1
        redis_server.start()  # same port, empty (no persistence)
        clock.t += 0.04  # before the retry time: still local
        assert kv.get("during-outage", now) == "D"
        assert not link.up
        clock.t += 0.02  # just past retry_initial_s: the next call PINGs and switches back
        kv.set("after", "A", 600, now)
        assert link.up and link.recoveries == 1
        r = raw_client(redis_server.url)
        assert r.exists("tt:kv:after") == 1
        assert kv.get("after", now) == "A"
        # outage writes stayed local (documented): Redis does not have them, and the lock is free again there
        assert r.exists("tt:kv:during-outage") == 0
        assert kv.get("during-outage", now) is None
        assert kv.set_nx("etf_lock:XLK", "again", 90, now)
        assert r.get("tt:kv:etf_lock:XLK").endswith("|again")
    finally:
        if redis_server.proc is None or redis_server.proc.poll() is not None:
            redis_server.start()  # other tests share the server

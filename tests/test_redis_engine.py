"""The engine on Redis: the signal stream decides exactly what the in-process path decides, a crashed
consumer's pending signals are claimed and none is decided twice, and Redis dying mid-run changes nothing
but the backend (a real redis-server on 127.0.0.1, killed and restarted on the same port)."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from core.clock import SimClock
from core.config import load_settings
from core.engine import Engine
from core.runtime import Runtime
from core.services.redis_link import RedisLink
from core.services.redis_stream import SignalStream
from core.state.store import Store
from core.venues.sim.bar_files import ReplayMarket
from tests.helpers import DAY, ScriptedStrategy, at, flat_bars

KEY = b"test-signing-key"  # REDIS_SIGNING_KEY of the engines of one account
TABLES = ("signals", "intents", "orders", "fills", "trades", "positions")


def _score(sym, ts):
    """NVDA and AMD strong now and then, TSLA negative: entries, evidence and suppressions."""
    minute = int(ts.timestamp() // 60)
    if sym == "NVDA":
        return 0.6 if minute % 7 < 3 else 0.1
    if sym == "AMD":
        return 0.5 if minute % 11 < 2 else 0.0
    return -0.45 if sym == "TSLA" and minute % 5 == 0 else 0.05


def engine(db, stream=None, **overrides) -> Engine:
    s = load_settings(auto_mode=True, **overrides)
    return Engine(s, Store(db), ReplayMarket(flat_bars([DAY])), strategy=ScriptedStrategy(_score), stream=stream)


def dump(e: Engine) -> dict:
    return {t: e.store.query(f"SELECT * FROM {t} ORDER BY 1") for t in TABLES}


def run(e: Engine, minutes: int, start=None) -> None:
    t = start or at(DAY, 10, 0)
    for _ in range(minutes * 2):
        e.tick(t)
        t += timedelta(seconds=30)


def test_the_stream_path_decides_exactly_like_the_in_process_path(tmp_path, redis_url):
    plain = engine(str(tmp_path / "plain.db"))
    streamed = engine(str(tmp_path / "stream.db"), SignalStream(RedisLink(redis_url), "acct1", "c1", signing_key=KEY))
    run(plain, 45)
    run(streamed, 45)
    a, b = dump(plain), dump(streamed)
    assert len(a["signals"]) > 100 and len(a["intents"]) > 0  # something to compare
    for t in TABLES:
        assert [{k: v for k, v in r.items() if k != "id"} for r in a[t]] == [
            {k: v for k, v in r.items() if k != "id"} for r in b[t]], t
    assert streamed.stream.pending_count() == 0  # every message acknowledged


def test_a_crashed_consumers_signals_are_claimed_and_none_is_decided_twice(tmp_path, redis_url):
    db = str(tmp_path / "acct.db")
    link = RedisLink(redis_url)
    # consumer c1 published and read three observations, stored the decision of the first, then died
    first = engine(db, SignalStream(link, "acct1", "c1", signing_key=KEY))
    first.tick(at(DAY, 9, 59))  # warm-up and reconcile before the market opens
    now = at(DAY, 10, 0)
    msgs = []
    for sym, score in (("NVDA", 0.6), ("MSFT", 0.1), ("AMZN", -0.2)):
        first.stream.publish({"ts": now.isoformat(), "symbol": sym, "tier": "A" if sym == "NVDA" else "B",
                              "score": score, "cutoff": 0.35, "bar_ts": (now - timedelta(minutes=1)).isoformat(),
                              "raw_score": score, "vol_spike": 0.0, "close": 100.0})
    msgs = first.stream.read()
    assert [m["symbol"] for _id, m in msgs] == ["NVDA", "MSFT", "AMZN"]
    first.decide.decide_ticker(now, "NVDA", "A", _obs(msgs[0][1]), 0.6, 0.35, first.account_state(now), _report(now))
    first.store.commit()
    first.store.close()
    assert first.stream.pending_count() == 3
    # c2 takes over the same account after the claim delay
    second = engine(db, SignalStream(RedisLink(redis_url), "acct1", "c2", signing_key=KEY), redis_claim_idle_s=1)
    time.sleep(1.05)  # XAUTOCLAIM's idle time is Redis wall time
    assert second.decide.consume_stream(now + timedelta(seconds=1), _report(now)) == 3
    rows = second.store.query("SELECT symbol, decision, reason FROM signals WHERE ts=? ORDER BY symbol",
                              (now.isoformat(),))
    assert [(r["symbol"], r["decision"]) for r in rows] == [("AMZN", "suppressed"), ("MSFT", "suppressed"),
                                                            ("NVDA", "actionable")]
    assert second.store.scalar("SELECT COUNT(*) FROM intents WHERE symbol='NVDA'") == 1  # not a second entry
    assert second.stream.pending_count() == 0


def _obs(m):
    from datetime import datetime

    from core.feed import Observation

    return Observation(m["symbol"], datetime.fromisoformat(m["bar_ts"]), float(m["raw_score"]),
                       float(m["vol_spike"]), float(m["close"]))


def _report(now):
    from core.engine import TickReport

    return TickReport(now=now)


def test_redis_dying_mid_run_falls_back_and_comes_back(tmp_path, redis_server, redis_url):
    s = load_settings(db_path=str(tmp_path / "fault.db"), engine_jobs=False, redis_url=redis_url, auto_mode=True,
                      redis_group="fault", redis_signing_key=KEY.decode())
    rt = Runtime(s, today=DAY + timedelta(days=1))
    try:
        rt.redis._retry_initial = 0.05  # reconnect quickly in the test
        rt.clock = SimClock(at(DAY, 10, 0))
        for _ in range(20):
            rt.clock.set(rt.clock.now() + timedelta(seconds=30))
            rt.run_tick()
        assert rt.redis.up and rt.engine.stream.pending_count() == 0
        before = rt.store.scalar("SELECT COUNT(*) FROM signals")
        redis_server.stop()
        for _ in range(20):  # ten market minutes without Redis
            rt.clock.set(rt.clock.now() + timedelta(seconds=30))
            rep = rt.run_tick()  # no exception escapes the job
            assert rep.broker_error is None
        assert not rt.redis.up and rt.redis.failovers == 1
        assert rt.status()["redis"]["backend"] == "local (Redis unreachable)"
        during = rt.store.scalar("SELECT COUNT(*) FROM signals") - before
        assert during > 0  # decisions kept coming, in-process
        grants = rt.store.query("SELECT minute, tier, granted FROM token_stats WHERE tier IN ('A', 'B')")
        limits = {"A": s.tier_a_tokens + s.reserve_tokens, "B": s.tier_b_tokens}
        assert all(r["granted"] <= limits[r["tier"]] for r in grants)  # the same per-minute limits locally
        redis_server.start()  # a new server on the same port
        time.sleep(0.1)
        for _ in range(6):
            rt.clock.set(rt.clock.now() + timedelta(seconds=30))
            rt.run_tick()
        assert rt.redis.up and rt.redis.recoveries == 1
        import redis

        assert redis.Redis.from_url(redis_url).xlen("signals.raw") > 0  # the stream is in use again
    finally:
        rt.stop()


@pytest.mark.parametrize("group", ["bad group!", ""])
def test_a_bad_consumer_group_name_is_refused(group):
    from core.config import ConfigError

    with pytest.raises(ConfigError, match="REDIS_GROUP"):
        load_settings(redis_group=group)


def test_observations_published_just_before_redis_dies_are_decided_in_process(tmp_path, redis_server, redis_url):
    class DiesOnRead(SignalStream):
        def read(self, count: int = 200):  # noqa: ANN201
            redis_server.stop()  # the server vanishes between this tick's publishing and its reading
            return super().read(count)

    plain = engine(str(tmp_path / "plain.db"))
    dying = engine(str(tmp_path / "dying.db"), DiesOnRead(RedisLink(redis_url), "acct9", "c1", signing_key=KEY))
    try:
        for e in (plain, dying):
            e.tick(at(DAY, 10, 0))
        assert not dying.stream.link.up
        rows = [{k: v for k, v in r.items() if k != "id"} for r in dying.store.query("SELECT * FROM signals")]
        assert rows and rows == [{k: v for k, v in r.items() if k != "id"}
                                 for r in plain.store.query("SELECT * FROM signals")]
    finally:
        redis_server.start()

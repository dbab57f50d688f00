"""Nothing that reaches Redis sets a price or steers an order (issue 30, finding 2), against a real redis-server.

Before: ``XADD signals.raw`` with AMZN ``close 87.97`` (real about 219.93), ``score 0.99``, ``cutoff 0.01`` in auto
mode ordered 303 shares, 2.5x the slot, with stop and take-profit from the fake price; a message missing ``ts``
raised ``KeyError`` every 30 s and stayed pending. Now every message must carry the HMAC of the shared
``REDIS_SIGNING_KEY``; a signed one must carry this engine's own close (within ``REDIS_PRICE_TOLERANCE``), and the
engine prices, sizes and brackets from its own feed. Refused messages are acknowledged and kept in ``signals.dead``.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
import redis

from core.config import load_settings
from core.engine import Engine
from core.services.redis_link import RedisLink
from core.services.redis_stream import DEAD, STREAM, SignalStream, signature
from core.state.store import Store
from core.venues.sim.bar_files import ReplayMarket
from tests.helpers import DAY, ScriptedStrategy, at, flat_bars

KEY = b"the-accounts-shared-signing-key"
PRICE = 219.93
T0 = at(DAY, 10, 0)


@pytest.fixture
def victim(tmp_path, redis_url):
    """An auto-mode engine on the stream whose own signals never pass the cutoff (every score 0)."""
    s = load_settings(auto_mode=True)
    stream = SignalStream(RedisLink(redis_url), "acct", "victim", signing_key=KEY)
    e = Engine(s, Store(str(tmp_path / "v.db")), ReplayMarket(flat_bars([DAY], prices={"AMZN": PRICE})),
               strategy=ScriptedStrategy(lambda sym, ts: 0.0), stream=stream)
    e.tick(T0)  # reconciled, the group exists, its own messages decided
    yield e, redis.Redis.from_url(redis_url, decode_responses=True)


def forged(now, **over):
    msg = {"ts": now.isoformat(), "symbol": "AMZN", "tier": "B", "score": "0.99", "cutoff": "0.01",
           "bar_ts": (now - timedelta(minutes=1)).isoformat(), "raw_score": "0.99", "vol_spike": "0.0",
           "close": "87.97"}
    msg.update(over)
    return {k: v for k, v in msg.items() if v is not None}


def send(r, fields, key=None):
    if key is not None:
        fields = {**fields, "sig": signature(key, fields)}
    r.xadd(STREAM, fields)


def after(e, r, seconds=30):
    now = T0 + timedelta(seconds=seconds)
    e.tick(now)
    amzn = e.store.query("SELECT * FROM intents WHERE symbol='AMZN'")
    dead = r.xrange(DEAD)
    return now, amzn, dead


@pytest.mark.parametrize("key", [None, b"a-guessed-key"], ids=["unsigned", "wrong_key"])
def test_an_unsigned_or_mis_signed_message_is_dropped(victim, key):
    e, r = victim
    send(r, forged(T0 + timedelta(seconds=20)), key)
    _, amzn, dead = after(e, r)
    assert amzn == [] and e.store.scalar("SELECT COUNT(*) FROM orders") == 0
    assert [d[1]["reason"] for d in dead] == ["unsigned or mis-signed"]
    assert e.stream.pending_count() == 0  # acknowledged: not read again every tick


def test_a_signed_message_with_another_price_is_refused_and_logged(victim, caplog):
    e, r = victim
    send(r, forged(T0 + timedelta(seconds=20)), KEY)  # a peer with the key, or one that lost its feed
    _, amzn, dead = after(e, r)
    assert amzn == [] and e.store.scalar("SELECT COUNT(*) FROM orders") == 0
    assert len(dead) == 1 and "87.97" in dead[0][1]["reason"] and "219.93" in dead[0][1]["reason"]
    assert any("refused" in rec.getMessage() for rec in caplog.records)


@pytest.mark.parametrize("close, decided", [(170.0, True), (170.0000001, False), (150.0, True), (149.999999, False)])
def test_the_price_tolerance_boundary(tmp_path, redis_url, close, decided):
    # tolerance 1/16 of a $160 close: exactly $10 either side (numbers a float holds exactly)
    s = load_settings(auto_mode=True, redis_price_tolerance=0.0625)
    stream = SignalStream(RedisLink(redis_url), "acct", "victim", signing_key=KEY)
    e = Engine(s, Store(str(tmp_path / "t.db")), ReplayMarket(flat_bars([DAY], prices={"AMZN": 160.0})),
               strategy=ScriptedStrategy(lambda sym, ts: 0.0), stream=stream)
    e.tick(T0)
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    send(r, forged(T0 + timedelta(seconds=20), close=repr(close)), KEY)
    _, amzn, dead = after(e, r)
    assert bool(amzn) is decided and len(dead) == (0 if decided else 1)
    if decided:  # priced from the engine's own bar, never from the message
        assert amzn[0]["price"] == 160.0


def test_a_signed_message_with_the_right_price_is_sized_and_bracketed_from_the_engines_own_feed(victim):
    e, r = victim
    at_ = T0 + timedelta(seconds=20)
    send(r, forged(at_, close=repr(PRICE), cutoff="0.0001"), KEY)
    _, amzn, dead = after(e, r)
    assert dead == [] and len(amzn) == 1
    intent = amzn[0]
    slot = e.s.max_exposure * e.s.sim_start_cash / e.s.min_slots
    assert intent["price"] == PRICE and intent["qty"] * PRICE <= slot  # 121 shares, not 303
    assert intent["stop_price"] == round(PRICE * (1 - e.s.stop_loss_pct), 2)
    # the cutoff is the engine's own, not the message's 0.0001
    row = e.store.one("SELECT cutoff FROM signals WHERE symbol='AMZN' AND ts=?", (at_.isoformat(),))
    assert row["cutoff"] == e.decide.cutoff(at_, 0.0) > 0.2


@pytest.mark.parametrize("broken, why", [({"ts": None}, "ts"), ({"score": "lots"}, "could not convert"),
                                         ({"symbol": "EVIL"}, "universe"), ({"score": "7"}, "outside"),
                                         ({"ts": "2099-01-01T00:00:00+00:00"}, "past moment")])
def test_a_malformed_signed_message_is_dead_lettered_not_left_pending(victim, broken, why):
    e, r = victim
    send(r, forged(T0 + timedelta(seconds=20), close=repr(PRICE), **broken), KEY)
    rep_now, amzn, dead = after(e, r)
    assert amzn == [] and len(dead) == 1 and why in dead[0][1]["reason"]
    assert e.stream.pending_count() == 0
    e.tick(rep_now + timedelta(seconds=30))  # and the next tick is not troubled by it again
    assert len(r.xrange(DEAD)) == 1

from datetime import datetime, timedelta

from core.clock import NY, UTC, minutes_since_open, minutes_to_close, trading_date
from core.config import load_settings
from core.engine.scheduler import TierScheduler
from core.rules import gates
from core.rules.reasons import OK, reason_name
from core.services.buckets import LocalTokenBuckets
from core.state.caps import CapCounters
from core.state.kv import SqliteKV
from core.state.locks import SymbolLocks
from core.state.store import Store
from core.universe import DEFAULT_UNIVERSE

T0 = datetime(2025, 3, 10, 10, 0, 0, tzinfo=NY)  # a Monday, midday


def buckets():
    return LocalTokenBuckets({"A": 6, "B": 3, "Reserve": 1}, borrow_window_s=10)


def test_tier_allocation_per_minute_and_refill():
    b = buckets()
    t = T0 + timedelta(seconds=20)
    assert sum(b.try_consume("A", t, allow_borrow=True).granted for _ in range(10)) == 6  # no borrow after 0-10 s
    assert sum(b.try_consume("B", t, allow_borrow=True).granted for _ in range(10)) == 3
    assert sum(b.try_consume("Bench", t, allow_borrow=True).granted for _ in range(10)) == 1
    t2 = t + timedelta(seconds=60)
    assert sum(b.try_consume("A", t2, allow_borrow=False).granted for _ in range(10)) == 6


def test_tier_a_borrows_reserve_only_in_the_first_ten_seconds_when_allowed():
    b = buckets()
    early = T0 + timedelta(seconds=5)
    grants = [b.try_consume("A", early, allow_borrow=True) for _ in range(8)]
    assert sum(g.granted for g in grants) == 7 and sum(g.borrowed for g in grants) == 1
    b = buckets()
    grants = [b.try_consume("A", early, allow_borrow=False) for _ in range(8)]
    assert sum(g.granted for g in grants) == 6
    b = buckets()
    late = T0 + timedelta(seconds=10)
    assert sum(b.try_consume("A", late, allow_borrow=True).granted for _ in range(8)) == 6


def test_overflow_stats_count_requests_and_grants():
    b = buckets()
    for _ in range(8):
        b.try_consume("A", T0 + timedelta(seconds=30), allow_borrow=True)
    stats = b.drain_stats(T0 + timedelta(seconds=90))
    assert [(t, req, got) for _, t, req, got, _ in stats] == [("A", 8, 6)]


def test_scheduler_cadence_30s_a_60s_b_bench_on_event():
    sch = TierScheduler(DEFAULT_UNIVERSE, buckets())
    assert set(sch.due_tickers(T0)) == {"NVDA", "TSLA", "AAPL", "MSFT", "AMZN", "META"}
    for s in sch.due_tickers(T0):
        sch.mark_processed(s, T0)
    assert set(sch.due_tickers(T0 + timedelta(seconds=30))) == {"NVDA", "TSLA", "AAPL"}
    assert set(sch.due_tickers(T0 + timedelta(seconds=60))) == {"NVDA", "TSLA", "AAPL", "MSFT", "AMZN", "META"}
    sch.add_event("AMD", "spike:1")
    sch.add_event("AAPL", "not-bench")
    assert "AMD" in sch.due_tickers(T0 + timedelta(seconds=1)) and "AAPL" not in sch.pending_events


def kv_store():
    store = Store(":memory:")
    return store, SqliteKV(store)


def rth_cap(counters, kv, s, symbol, tier, now, slot_s):
    """As the engine runs it: the pure check, then (when it passes) the count, idempotent per slot."""
    day = trading_date(now).isoformat()
    sym_count, all_count = counters.day_counts(day, symbol)
    cap = gates.tier_cap(gates.TIER_CODES[tier], s.tier_a_daily_cap, s.tier_b_daily_cap, s.bench_daily_cap)
    code = gates.check_rth_daily_cap(sym_count, all_count, cap, s.rth_daily_cap)
    if code == OK and SymbolLocks(kv).take_cap_slot(symbol, day, gates.cap_slot(now.timestamp(), slot_s),
                                                    s.cap_idempotency_s, now):
        counters.count(day, symbol)
    return None if code == OK else reason_name(code)


def mixer_cooldown(kv, symbol, now):
    code = gates.check_mixer_cooldown(SymbolLocks(kv).cooldown_until(symbol, now), now.timestamp())
    return None if code == OK else reason_name(code)


def direction_lock(kv, symbol, sign, now):
    held, until = SymbolLocks(kv).direction(symbol, now)
    code = gates.check_direction_lock(held, until, sign, now.timestamp())
    return None if code == OK else reason_name(code)


def test_cooldown_is_180s_to_the_second():
    _, kv = kv_store()
    SymbolLocks(kv).start_cooldown("AAPL", 180, T0)
    assert mixer_cooldown(kv, "AAPL", T0 + timedelta(seconds=179)) == "mixer_cooldown"
    assert mixer_cooldown(kv, "AAPL", T0 + timedelta(seconds=180)) is None
    assert mixer_cooldown(kv, "MSFT", T0) is None


def test_direction_lock_blocks_only_the_opposite_sign_for_90s():
    _, kv = kv_store()
    SymbolLocks(kv).lock_direction("TSLA", 1, 90, T0)
    assert direction_lock(kv, "TSLA", 1, T0 + timedelta(seconds=10)) is None
    assert direction_lock(kv, "TSLA", -1, T0 + timedelta(seconds=89)) == "direction_lock"
    assert direction_lock(kv, "TSLA", -1, T0 + timedelta(seconds=90)) is None


def cutoff_at(when, spike, s, delta):
    segment = gates.session_segment(minutes_since_open(when), minutes_to_close(when), s.cutoff_segment_min)
    return gates.dynamic_cutoff(segment, spike, s.cutoff_open, s.cutoff_midday, s.cutoff_close,
                                s.cutoff_high_vol_spike, s.cutoff_high_vol_add, delta)


def test_dynamic_cutoff_by_segment_volatility_and_delta():
    s = load_settings()
    open_ = datetime(2025, 3, 10, 9, 40, tzinfo=NY)
    mid = datetime(2025, 3, 10, 12, 0, tzinfo=NY)
    close = datetime(2025, 3, 10, 15, 45, tzinfo=NY)
    assert cutoff_at(open_, 0.0, s, 0.0) == s.cutoff_open
    assert cutoff_at(mid, 0.0, s, 0.0) == s.cutoff_midday
    assert cutoff_at(close, 0.0, s, 0.0) == s.cutoff_close
    assert cutoff_at(mid, 0.9, s, 0.0) == round(s.cutoff_midday + s.cutoff_high_vol_add, 6)
    assert cutoff_at(mid, 0.0, s, -0.03) == round(s.cutoff_midday - 0.03, 6)
    assert gates.check_cutoff(-0.30, 0.28) == OK and reason_name(gates.check_cutoff(0.27, 0.28)) == "below_cutoff"


def test_rth_cap_counts_once_per_slot_and_blocks_at_the_cap():
    s = load_settings(tier_a_daily_cap=3, rth_daily_cap=100)
    store, kv = kv_store()
    counters = CapCounters(store)
    t = T0
    assert rth_cap(counters, kv, s, "NVDA", "A", t, 30) is None
    # the same slot again inside 90 s (a retried tick) is not counted twice
    assert rth_cap(counters, kv, s, "NVDA", "A", t + timedelta(seconds=5), 30) is None
    assert store.counter("rth:2025-03-10:NVDA") == 1
    for k in range(1, 3):
        assert rth_cap(counters, kv, s, "NVDA", "A", t + timedelta(seconds=30 * k), 30) is None
    assert store.counter("rth:2025-03-10:NVDA") == 3
    assert rth_cap(counters, kv, s, "NVDA", "A", t + timedelta(seconds=120), 30) == "rth_daily_cap"
    assert store.counter("rth:2025-03-10:__global__") == 3


def test_rth_cap_rolls_at_new_york_midnight_not_utc():
    s = load_settings(tier_a_daily_cap=1)
    store, kv = kv_store()
    counters = CapCounters(store)
    late_ny = datetime(2025, 3, 11, 3, 30, tzinfo=UTC)  # 23:30 on Mar 10 in New York (EDT)
    assert rth_cap(counters, kv, s, "NVDA", "A", late_ny, 30) is None
    # 00:30 UTC day change already happened; NY date is still the 10th: capped
    assert rth_cap(counters, kv, s, "NVDA", "A", late_ny + timedelta(minutes=20), 30) == "rth_daily_cap"
    # after NY midnight the count restarts
    assert rth_cap(counters, kv, s, "NVDA", "A", late_ny + timedelta(minutes=40), 30) is None


def test_kv_survives_restart_and_expires_by_passed_time(tmp_path):
    store = Store(tmp_path / "t.db")
    kv = SqliteKV(store)
    kv.set("etf_lock:SQQQ", "MEGATECH", 90, T0)
    assert not kv.set_nx("etf_lock:SQQQ", "x", 90, T0 + timedelta(seconds=89))
    store.commit()
    store.close()
    kv2 = SqliteKV(Store(tmp_path / "t.db"))
    assert kv2.get("etf_lock:SQQQ", T0 + timedelta(seconds=60)) == "MEGATECH"
    assert kv2.set_nx("etf_lock:SQQQ", "y", 90, T0 + timedelta(seconds=90))

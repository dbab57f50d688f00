"""rules §4, signal gates: each gate on both sides of its threshold through ``Engine.tick``.

Every other gate is comfortably met: a fresh engine, a flat market at $100, no position. A positive score
that passes everything becomes a long intent; a negative one becomes basket evidence (no intent), which keeps
repeated signals free of the ``intent_pending`` check. The Tier A ticker NVDA is processed every 30 s
(every 28 s with the scheduler's jitter). See tests/test_rule_boundaries_baskets.py (rules §8) and
tests/test_rule_boundaries_risk.py (rules §7).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from tests.helpers import DAY, at, run_ticks
from tests.rules_helpers import before, decision_at, engine, intents, outcome, signal_rows

T = at(DAY, 11, 0)
MID = at(DAY, 12, 0)


# ------------------------------------------------------------------ 1. market session

def test_rth_opens_at_0930_new_york_in_daylight_time():
    # 2025-03-10 is the first Monday of EDT: the open is 13:30 UTC (14:30 UTC in winter)
    e = engine({"NVDA": 0.6})
    e.tick(datetime(2025, 3, 10, 13, 29, 59, tzinfo=UTC))
    assert e.store.query("SELECT * FROM signals") == [] and e.store.query("SELECT * FROM basket_state") == []
    e.tick(datetime(2025, 3, 10, 13, 30, 0, tzinfo=UTC))
    assert {r["symbol"] for r in e.store.query("SELECT symbol FROM signals")} >= {"NVDA", "MSFT"}


def test_rth_closes_at_1600_nothing_is_decided_from_the_close_on():
    e = engine({"NVDA": 0.6, "TSLA": -0.6})
    e.tick(at(DAY, 15, 59, 30))
    assert outcome(decision_at(e, "NVDA", at(DAY, 15, 59, 30))) == "actionable"
    n_signals, n_intents = len(e.store.query("SELECT * FROM signals")), len(intents(e))
    basket_ts = e.store.one("SELECT ts FROM basket_state WHERE name='MEGATECH'")["ts"]
    for t in (at(DAY, 16, 0), at(DAY, 16, 0, 30), at(DAY, 17, 0)):
        e.tick(t)
    assert len(e.store.query("SELECT * FROM signals")) == n_signals and len(intents(e)) == n_intents
    assert e.store.one("SELECT ts FROM basket_state WHERE name='MEGATECH'")["ts"] == basket_ts


EARLY_CLOSE = date(2025, 7, 3)  # the NYSE closes at 13:00 before Independence Day


def test_early_close_day_ends_at_1300():
    e = engine({"NVDA": 0.6}, days=[EARLY_CLOSE])
    e.tick(at(EARLY_CLOSE, 12, 59, 30))
    assert outcome(decision_at(e, "NVDA", at(EARLY_CLOSE, 12, 59, 30))) == "actionable"
    n = len(e.store.query("SELECT * FROM signals"))
    e.tick(at(EARLY_CLOSE, 13, 0))
    e.tick(at(EARLY_CLOSE, 14, 0))
    assert len(e.store.query("SELECT * FROM signals")) == n


@pytest.mark.parametrize("when", [
    datetime(2025, 7, 4, 15, 0, tzinfo=UTC),  # Independence Day, 11:00 in New York
    datetime(2025, 3, 15, 15, 0, tzinfo=UTC),  # a Saturday
    datetime(2025, 3, 10, 12, 0, tzinfo=UTC),  # 08:00 in New York, before the open
], ids=["holiday", "saturday", "pre_market"])
def test_outside_the_session_nothing_is_decided(when):
    e = engine({"NVDA": 0.6, "AAPL": -0.6, "MSFT": -0.6, "AMZN": -0.6}, days=[EARLY_CLOSE, DAY])
    e.tick(when)
    e.tick(when + timedelta(seconds=30))
    assert e.store.query("SELECT * FROM signals") == []
    assert intents(e) == [] and e.store.query("SELECT * FROM basket_state") == []


# ------------------------------------------------------------------ 2. dynamic cutoff

def first_decision(table, when, sym="NVDA", **kw):
    e = engine(table, **kw)
    e.tick(when)
    return e, decision_at(e, sym, when)


@pytest.mark.parametrize("when, cutoff", [
    (at(DAY, 9, 59, 30), 0.35),  # first 30 minutes: "open"
    (at(DAY, 10, 0), 0.28),  # 30 minutes after the open: "midday"
    (MID, 0.28),
    (at(DAY, 15, 29, 59), 0.28),  # just over 30 minutes before the close
    (at(DAY, 15, 30), 0.32),  # the last 30 minutes: "close"
])
@pytest.mark.parametrize("sign", [1, -1])
def test_cutoff_by_session_segment_passes_at_the_cutoff_and_not_just_below(when, cutoff, sign):
    _, row = first_decision({"NVDA": sign * cutoff}, when)
    assert row["cutoff"] == cutoff and outcome(row) == "actionable"
    _, row = first_decision({"NVDA": sign * (cutoff - 0.0001)}, when)
    assert row["cutoff"] == cutoff and outcome(row) == "below_cutoff"


@pytest.mark.parametrize("spike, cutoff", [(0.4999, 0.28), (0.5, 0.33), (0.9, 0.33)])
def test_cutoff_in_the_high_volatility_regime(spike, cutoff):
    _, row = first_decision({"NVDA": cutoff}, MID, spikes={"NVDA": spike})
    assert row["cutoff"] == cutoff and outcome(row) == "actionable"
    _, row = first_decision({"NVDA": cutoff - 0.0001}, MID, spikes={"NVDA": spike})
    assert row["cutoff"] == cutoff and outcome(row) == "below_cutoff"


@pytest.mark.parametrize("delta, cutoff", [(-0.03, 0.25), (0.02, 0.30)])
def test_cutoff_delta_setting_moves_the_cutoff(delta, cutoff):
    _, row = first_decision({"NVDA": cutoff}, MID, cutoff_delta=delta)
    assert row["cutoff"] == cutoff and outcome(row) == "actionable"
    _, row = first_decision({"NVDA": cutoff - 0.0001}, MID, cutoff_delta=delta)
    assert row["cutoff"] == cutoff and outcome(row) == "below_cutoff"


def test_cutoff_delta_is_live_tunable():
    e = engine({"NVDA": 0.25, "TSLA": 0.2499})
    e.tick(MID)
    assert [outcome(decision_at(e, s, MID)) for s in ("NVDA", "TSLA")] == ["below_cutoff", "below_cutoff"]
    e.store.send_command("set_params", {"profile": "relaxed"}, who="trader", now=MID)  # cutoff_delta -0.03
    t2 = MID + timedelta(seconds=30)
    e.tick(t2)
    nvda, tsla = decision_at(e, "NVDA", t2), decision_at(e, "TSLA", t2)
    assert nvda["cutoff"] == 0.25 and outcome(nvda) == "actionable" and outcome(tsla) == "below_cutoff"


# ------------------------------------------------------------------ 3. mixer cooldown (default 180 s)

def cooldown_run(gap_s, cooldown_s=None, **kw):
    """NVDA bearish evidence at T and again ``gap_s`` later (same sign: the direction lock is no matter)."""
    e = engine({"NVDA": -0.6}, **kw)
    if cooldown_s is not None:
        e.set_params({"cooldown_s": cooldown_s}, who="trader", now=T)
    e.tick(T)
    assert outcome(decision_at(e, "NVDA", T)) == "actionable"
    e.tick(T + timedelta(seconds=gap_s))
    return outcome(decision_at(e, "NVDA", T + timedelta(seconds=gap_s)))


@pytest.mark.parametrize("gap_s, expected", [(30, "mixer_cooldown"), (179, "mixer_cooldown"),
                                             (180, "actionable"), (181, "actionable")])
def test_mixer_cooldown_default_180_s(gap_s, expected):
    assert cooldown_run(gap_s) == expected


@pytest.mark.parametrize("gap_s, expected", [(119, "mixer_cooldown"), (120, "actionable")])
def test_mixer_cooldown_relaxed_120_s_set_live(gap_s, expected):
    assert cooldown_run(gap_s, cooldown_s=120) == expected


def test_mixer_cooldown_is_per_ticker_and_only_after_an_actionable_signal():
    # TSLA's first signal is below the cutoff: it starts no cooldown, so its next strong one passes
    e = engine({"NVDA": -0.6, "TSLA": before(T, -0.1, -0.6)})
    e.tick(T)
    t2 = T + timedelta(seconds=60)
    e.tick(t2)
    assert outcome(decision_at(e, "TSLA", T)) == "below_cutoff"
    assert outcome(decision_at(e, "TSLA", t2)) == "actionable"
    assert outcome(decision_at(e, "NVDA", t2)) == "mixer_cooldown"


# ------------------------------------------------------------------ 4. direction lock (default 90 s)

@pytest.mark.parametrize("first", [-0.6, 0.6], ids=["short_then_long", "long_then_short"])
@pytest.mark.parametrize("gap_s, expected", [(30, "direction_lock"), (89, "direction_lock"),
                                             (90, "actionable"), (91, "actionable")])
def test_direction_lock_default_90_s(first, gap_s, expected):
    # NVDA scores ``first`` on the bars before 11:00 and the opposite from then on; no cooldown
    e = engine({"NVDA": before(T, first, -first)}, mixer_cooldown_s=0)
    t1 = T + timedelta(seconds=60)  # the first tick that sees the 11:00 bar (the opposite sign)
    t0 = t1 - timedelta(seconds=gap_s)  # sees a bar before 11:00 (the first sign)
    e.tick(t0)
    assert outcome(decision_at(e, "NVDA", t0)) == "actionable"
    e.tick(t1)
    row = decision_at(e, "NVDA", t1)
    assert row["score"] == -first and outcome(row) == expected


@pytest.mark.parametrize("gap_s, expected", [(119, "direction_lock"), (120, "actionable")])
def test_direction_lock_rollback_120_s_set_live(gap_s, expected):
    e = engine({"NVDA": before(T, -0.6, 0.6)}, mixer_cooldown_s=0)
    e.set_params({"direction_lock_s": 120}, who="trader", now=T)
    t0, t1 = T + timedelta(seconds=60 - gap_s), T + timedelta(seconds=60)
    e.tick(t0)
    e.tick(t1)
    assert outcome(decision_at(e, "NVDA", t0)) == "actionable"
    assert outcome(decision_at(e, "NVDA", t1)) == expected


def test_direction_lock_lets_the_same_sign_through():
    e = engine({"NVDA": -0.6}, mixer_cooldown_s=0)
    e.tick(T)
    e.tick(T + timedelta(seconds=30))
    assert [outcome(r) for r in signal_rows(e, "NVDA")] == ["actionable", "actionable"]


def test_gate_order_cutoff_then_cooldown_then_direction_lock():
    # 11:00 strong short (cooldown to 11:02:30, lock to 11:10); 11:01 a weak long fails the cutoff first;
    # 11:02 a strong long fails the cooldown before the lock; 11:03 the lock
    def nvda(ts):
        return {T - timedelta(minutes=1): -0.6, T: 0.1}.get(ts.to_pydatetime(), 0.6)
    e = engine({"NVDA": nvda}, mixer_cooldown_s=150, direction_lock_s=600)
    for k in range(4):
        e.tick(T + timedelta(minutes=k))
    assert [outcome(r) for r in signal_rows(e, "NVDA")] == [
        "actionable", "below_cutoff", "mixer_cooldown", "direction_lock"]


# ------------------------------------------------------------------ 5. risk: test_rule_boundaries_risk.py

# ------------------------------------------------------------------ 6. RTH daily cap

def cap_outcomes(e, sym):
    return [outcome(r) for r in signal_rows(e, sym)]


@pytest.mark.parametrize("sym, tier_cap, step_s, spikes", [
    ("NVDA", 40, 30, {}),  # Tier A
    ("MSFT", 25, 60, {}),  # Tier B
    ("GOOGL", 10, 60, {"GOOGL": 0.9}),  # Bench: processed on a volume spike
])
def test_per_ticker_cap_by_tier_allows_cap_signals_then_refuses(sym, tier_cap, step_s, spikes):
    e = engine({sym: -0.6}, spikes=spikes, mixer_cooldown_s=0, direction_lock_s=0)
    run_ticks(e, at(DAY, 10, 0), at(DAY, 10, 0) + timedelta(seconds=step_s * (tier_cap + 2)), step_s=step_s)
    assert cap_outcomes(e, sym) == ["actionable"] * tier_cap + ["rth_daily_cap"] * 3


def test_global_cap_of_100_across_tickers():
    six = ("NVDA", "TSLA", "AAPL", "MSFT", "AMZN", "META")
    e = engine(dict.fromkeys(six, -0.6), mixer_cooldown_s=0, direction_lock_s=0)
    run_ticks(e, at(DAY, 10, 0), at(DAY, 10, 15))
    per = {s: cap_outcomes(e, s) for s in six}
    assert sum(o.count("actionable") for o in per.values()) == 100
    for o in per.values():  # each ticker is refused below its own cap (A 40, B 25), and from then on always
        n = o.count("actionable")
        assert n < 25 and len(o) > n and o == ["actionable"] * n + ["rth_daily_cap"] * (len(o) - n)


def test_cap_counts_one_per_slot_a_repeat_in_the_same_slot_passes_uncounted():
    # 10:00:00 and 10:00:28 are in the same 30 s slot: two actionable signals, one count, so 41 pass
    e = engine({"NVDA": -0.6}, mixer_cooldown_s=0, direction_lock_s=0)
    e.tick(at(DAY, 10, 0))
    e.tick(at(DAY, 10, 0, 28))
    run_ticks(e, at(DAY, 10, 1), at(DAY, 10, 21))  # 41 more ticks
    assert cap_outcomes(e, "NVDA") == ["actionable"] * 41 + ["rth_daily_cap"] * 2


def test_cap_counts_only_actionable_signals():
    # with a 60 s cooldown every other signal is suppressed; only the actionable ones use the cap of 3
    e = engine({"NVDA": -0.6}, mixer_cooldown_s=60, direction_lock_s=0, tier_a_daily_cap=3)
    run_ticks(e, at(DAY, 10, 0), at(DAY, 10, 3, 30))
    assert cap_outcomes(e, "NVDA") == ["actionable", "mixer_cooldown"] * 3 + ["rth_daily_cap"] * 2


def test_cap_rolls_with_the_new_york_trading_day():
    days = [DAY, date(2025, 3, 11)]
    e = engine({"NVDA": -0.6}, days=days, mixer_cooldown_s=0, direction_lock_s=0, tier_a_daily_cap=2)
    run_ticks(e, at(DAY, 15, 58, 30), at(DAY, 15, 59, 30))
    run_ticks(e, at(days[1], 9, 31), at(days[1], 9, 32))
    assert cap_outcomes(e, "NVDA") == ["actionable", "actionable", "rth_daily_cap"] * 2

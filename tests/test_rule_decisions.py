"""The rule questions issue 23 decided (docs/rules.md §4.4, §8), each on both sides through ``Engine.tick``.

* The direction lock starts only when a signal becomes an intent (or a basket's evidence): a signal refused by the
  pause, risk or the cap locks nothing.
* A basket's "2 ticks in a row" are two ticks of one session with no gap longer than ``BASKET_STREAK_GAP_S``
  between them: the streak starts again at each session open and after an engine was stopped.
* A basket's inverse ETF goes through the same entry blocks, in the same order, as a long: a losing exit's
  cooldown on the ETF holds it too.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from core.clock import trading_sessions
from tests.helpers import DAY, at
from tests.rules_helpers import basket_row, decision_at, engine, intents, outcome

T = at(DAY, 11, 0)
MEGA5 = ("AAPL", "MSFT", "AMZN", "META", "TSLA")


# ------------------------------------------------------------------ direction lock: only an intent starts it

@pytest.mark.parametrize("paused, expected", [(True, "actionable"), (False, "direction_lock")])
def test_a_long_refused_by_the_pause_starts_no_direction_lock(paused, expected):
    # NVDA +0.6 on the bars before 11:00, -0.6 from then on; the -0.6 is seen 30 s after the +0.6
    e = engine({"NVDA": lambda ts: 0.6 if ts.to_pydatetime() < T else -0.6}, mixer_cooldown_s=0)
    if paused:
        e.set_params({"paused": True}, who="trader", now=T)
    t0, t1 = T + timedelta(seconds=30), T + timedelta(seconds=60)
    e.tick(t0)
    assert outcome(decision_at(e, "NVDA", t0)) == ("paused" if paused else "actionable")
    e.tick(t1)
    row = decision_at(e, "NVDA", t1)
    assert row["score"] == -0.6 and outcome(row) == expected


@pytest.mark.parametrize("cap, expected", [(1, "direction_lock"), (0, "rth_daily_cap")])
def test_a_signal_refused_by_the_cap_starts_no_direction_lock(cap, expected):
    # bearish evidence first (cap 1: counted and locked; cap 0: refused), then bullish 30 s later
    e = engine({"NVDA": lambda ts: -0.6 if ts.to_pydatetime() < T else 0.6}, mixer_cooldown_s=0,
               tier_a_daily_cap=cap + 1 if cap else 0)
    t0, t1 = T + timedelta(seconds=30), T + timedelta(seconds=60)
    e.tick(t0)
    assert outcome(decision_at(e, "NVDA", t0)) == ("actionable" if cap else "rth_daily_cap")
    e.tick(t1)
    assert outcome(decision_at(e, "NVDA", t1)) == expected


# ------------------------------------------------------------------ a basket's streak: ticks of one session

def sqqq(e):
    return [(r["symbol"], r["created_at"]) for r in intents(e, symbol="SQQQ")]


@pytest.mark.parametrize("second_s, fires", [(30, True), (300, True), (301, False), (600, False)])
def test_two_evaluations_further_apart_than_the_gap_are_not_in_a_row(second_s, fires):
    e = engine(dict.fromkeys(MEGA5, -0.5))
    e.tick(T)
    e.tick(T + timedelta(seconds=second_s))
    st = basket_row(e, "MEGATECH")
    assert st["condition"] == 1 and st["consecutive"] == (2 if fires else 1)
    assert bool(sqqq(e)) is fires


@pytest.mark.parametrize("second_s, fires", [(120, True), (121, False)])
def test_the_gap_setting_moves_the_boundary(second_s, fires):
    e = engine(dict.fromkeys(MEGA5, -0.5), basket_streak_gap_s=120)
    e.tick(T)
    e.tick(T + timedelta(seconds=second_s))
    assert bool(sqqq(e)) is fires


def test_the_close_and_the_next_open_are_not_two_ticks_in_a_row():
    day1, day2 = trading_sessions(DAY, 2)
    e = engine(dict.fromkeys(MEGA5, -0.5), days=[day1, day2])
    e.tick(at(day1, 15, 59, 30))
    assert basket_row(e, "MEGATECH")["consecutive"] == 1
    e.tick(at(day2, 9, 31))  # the first tick of the next session
    st = basket_row(e, "MEGATECH")
    assert (st["condition"], st["consecutive"]) == (1, 1) and not sqqq(e)
    e.tick(at(day2, 9, 31, 30))  # the second tick of the session fires
    assert basket_row(e, "MEGATECH")["consecutive"] == 2 and len(sqqq(e)) == 1


@pytest.mark.parametrize("restart_after_s, fires", [(30, True), (301, False)])
def test_a_restart_keeps_the_streak_only_without_a_gap(tmp_path, restart_after_s, fires):
    db = str(tmp_path / "e.db")
    first = engine(dict.fromkeys(MEGA5, -0.5), db=db)
    first.tick(T)
    first.store.close()
    second = engine(dict.fromkeys(MEGA5, -0.5), db=db)  # a new process on the same journal
    second.tick(T + timedelta(seconds=restart_after_s))
    assert basket_row(second, "MEGATECH")["consecutive"] == (2 if fires else 1)
    assert bool(sqqq(second)) is fires


# ------------------------------------------------------------------ one chain of entry blocks for longs and ETFs

@pytest.mark.parametrize("cooldown_left_s, blocked", [(31, "symbol_cooldown"), (30, None)])
def test_a_losing_exit_cooldown_holds_the_inverse_etf_as_it_holds_a_stock(cooldown_left_s, blocked):
    e = engine(dict.fromkeys(MEGA5, -0.5))
    # SQQQ was sold at a loss: no re-entry for PROTECTION_SYMBOL_COOLDOWN_S (as the fill ledger sets it)
    e.state.locks.start_symbol_cooldown("SQQQ", cooldown_left_s, T)
    e.tick(T)
    e.tick(T + timedelta(seconds=30))  # the basket fires here
    st = basket_row(e, "MEGATECH")
    assert st["consecutive"] == 2 and st["blocked_by"] == blocked
    assert bool(sqqq(e)) is (blocked is None)

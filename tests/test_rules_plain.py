"""The rules as plain functions of numbers (core/rules), where the engine's state cannot show a boundary.

The TTL key store also forgets a lock at its expiry, so through ``Engine.tick`` a lock's own boundary is never
seen; a compiled research kernel keeps locks as "expires at" arrays and relies on the rule alone. The order of the
entry blocks and the cutoff's floor are checked through ``Engine.tick`` as well.
"""

from __future__ import annotations

import math
from datetime import timedelta

import numpy as np
import pytest

from core.config import load_settings
from core.rules import baskets, bracket, fills, gates, protections, risk, tokens
from core.rules.params import param_vector
from core.rules.reasons import (
    ALREADY_HELD,
    CONFLICT,
    DIRECTION_LOCK,
    ETF_HELD,
    ETF_LOCK,
    INTENT_PENDING,
    MIXER_COOLDOWN,
    OK,
    PAUSED,
    PROTECTION,
    REASONS,
    RISK_SLOT,
    SYMBOL_COOLDOWN,
    reason_code,
    reason_name,
    reason_text,
)
from core.state.protections import Firing
from tests.helpers import DAY, at
from tests.rules_helpers import decision_at, engine, hold, outcome

T = at(DAY, 11, 0)


# ------------------------------------------------------------------ locks expire at their time, not a moment later

@pytest.mark.parametrize("now, holds", [(99.999, True), (100.0, False), (100.001, False)])
def test_a_lock_holds_until_the_second_it_expires(now, holds):
    assert gates.lock_holds(100.0, now) is holds
    assert gates.check_mixer_cooldown(100.0, now) == (MIXER_COOLDOWN if holds else OK)
    assert gates.check_direction_lock(1, 100.0, -1, now) == (DIRECTION_LOCK if holds else OK)
    assert gates.check_etf_lock(100.0, now) == (ETF_LOCK if holds else OK)


def test_an_unset_lock_never_holds():
    assert gates.check_mixer_cooldown(gates.no_lock(), 0.0) == OK
    assert gates.check_direction_lock(0, gates.no_lock(), 1, 0.0) == OK


# ------------------------------------------------------------------ the entry blocks, one order for every entry

BLOCKS = ("paused", "protection_pause", "symbol_cooldown", "held", "conflict", "intent_pending")


@pytest.mark.parametrize("etf", [False, True])
def test_the_entry_blocks_answer_in_one_order(etf):
    expected = [PAUSED, PROTECTION, SYMBOL_COOLDOWN, ETF_HELD if etf else ALREADY_HELD, CONFLICT, INTENT_PENDING, OK]
    for k in range(len(BLOCKS) + 1):  # the first k blocks cleared, the rest all holding
        flags = {name: i >= k for i, name in enumerate(BLOCKS)}
        assert gates.check_entry_blocks(flags["paused"], flags["protection_pause"], flags["symbol_cooldown"],
                                        flags["held"], etf, flags["conflict"], flags["intent_pending"]) == expected[k]


def test_every_block_at_once_through_the_engine_is_reported_by_the_first_in_order():
    # AAPL +0.6 while paused, a protection pausing entries, AAPL in its losing-exit cooldown and AAPL held
    e = engine({"AAPL": 0.6}, mixer_cooldown_s=0)
    hold(e, "AAPL", 10, 100.0)
    e.set_params({"paused": True}, who="trader", now=T)
    e.state.protections.record(Firing("stoploss_guard", T, "test", {}, {}, T + timedelta(hours=1),
                                      pause_until=T + timedelta(hours=1)))
    e.state.locks.start_symbol_cooldown("AAPL", 3600, T)
    steps = []
    for k in range(4):
        now = T + timedelta(seconds=30 * k)
        e.tick(now)
        steps.append(outcome(decision_at(e, "AAPL", now)))
        if k == 0:
            e.set_params({"paused": False}, who="trader", now=now)
        elif k == 1:
            e.state.protections.release(1, who="trader", now=now)
        elif k == 2:
            e.state.locks.start_symbol_cooldown("AAPL", 1, now)  # runs out before the next tick
    assert steps == ["paused", "protection:stoploss_guard", "symbol_cooldown", "already_held"]


# ------------------------------------------------------------------ the cutoff never falls below 0.01

@pytest.mark.parametrize("score, expected", [(0.0099, "below_cutoff"), (0.01, "actionable")])
def test_the_cutoff_floor_holds_with_the_lowest_delta(score, expected):
    e = engine({"NVDA": -score}, cutoff_delta=-0.5)  # 0.28 - 0.50 would be -0.22
    e.tick(T)
    row = decision_at(e, "NVDA", T)
    assert row["cutoff"] == 0.01 and outcome(row) == expected


# ------------------------------------------------------------------ tokens, baskets, fills as numbers

@pytest.mark.parametrize("tier, own, reserve, second, borrow, expected", [
    (gates.TIER_A, 1, 1, 30, True, tokens.GRANT_OWN),
    (gates.TIER_A, 0, 1, 9, True, tokens.GRANT_BORROWED),
    (gates.TIER_A, 0, 1, 10, True, tokens.GRANT_DENIED),
    (gates.TIER_A, 0, 1, 0, False, tokens.GRANT_DENIED),
    (gates.TIER_A, 0, 0, 0, True, tokens.GRANT_DENIED),
    (gates.TIER_B, 0, 1, 0, True, tokens.GRANT_DENIED),
])
def test_take_token(tier, own, reserve, second, borrow, expected):
    assert tokens.take_token(own, reserve, tier, second, borrow, 10) == expected


def test_basket_figures_skip_members_without_a_fresh_score():
    ts = np.array([100.0, 0.0, np.nan, 50.0])
    scores = np.array([-0.5, -0.9, -1.0, 0.2])
    counted = baskets.basket_members(ts, scores, 300.0, 250.0)
    assert counted.tolist() == [True, False, False, True]
    n, ratio, mean = baskets.basket_figures(scores, counted)
    assert (n, ratio) == (2, 0.5) and mean == pytest.approx(-0.15)


@pytest.mark.parametrize("prev_session, gap, expected", [(7, 30.0, 3), (6, 30.0, 1), (7, 301.0, 1)])
def test_basket_streak(prev_session, gap, expected):
    assert baskets.basket_streak(2, 1000.0, prev_session, True, 1000.0 + gap, 7, 300.0) == expected
    assert baskets.basket_streak(2, 1000.0, 7, False, 1030.0, 7, 300.0) == 0


def test_first_bracket_hit_stop_wins_a_bar_touching_both_and_gaps_fill_at_the_open():
    op, hi, lo = np.array([100.0, 100.0, 95.0]), np.array([101.0, 104.0, 96.0]), np.array([99.0, 97.0, 94.0])
    assert fills.first_bracket_hit(op, hi, lo, 98.0, 103.0, 0.0) == (1, fills.LEG_STOP, 98.0)
    i, leg, px = fills.first_bracket_hit(op[2:], hi[2:], lo[2:], 98.0, 103.0, 0.01)
    assert (i, leg) == (0, fills.LEG_STOP) and px == pytest.approx(95.0 * 0.99)  # gapped through: the open
    assert fills.first_bracket_hit(op[:1], hi[:1], lo[:1], math.nan, 101.0, 0.0) == (0, fills.LEG_TAKE_PROFIT, 101.0)
    assert fills.first_bracket_hit(op[:1], hi[:1], lo[:1], 90.0, 110.0, 0.0)[1] == fills.LEG_NONE


# ------------------------------------------------------------------ one table of reasons

def test_every_reason_has_one_name_and_words_and_reads_back():
    names = [name for name, _ in REASONS.values()]
    assert len(names) == len(set(names)) and all(words for _, words in REASONS.values())
    for code in REASONS:
        assert reason_code(reason_name(code)) == code
    assert reason_text(PROTECTION, "stoploss_guard") == "protection:stoploss_guard"
    assert reason_code("risk_max_positions (2 pending approvals)") == reason_code("risk_max_positions")


# ------------------------------------------------------------------ the bracket and the final check

@pytest.mark.parametrize("price, expected", [(0.123456, 0.1235), (0.99994, 0.9999), (1.0, 1.0), (12.3456, 12.35)])
def test_price_increment_cents_from_a_dollar_and_hundredths_of_a_cent_below(price, expected):
    assert bracket.price_increment(price) == expected


def test_bracket_prices_from_the_entry():
    assert bracket.bracket_prices(100.0, 0.015, 0.03) == (98.5, 103.0)
    assert bracket.bracket_prices(0.5, 0.015, 0.03) == (0.4925, 0.515)


@pytest.mark.parametrize("qty, allowed", [(27, True), (28, False)])
def test_the_final_check_allows_one_share_over_the_slot_and_no_more(qty, allowed):
    # $10,000 equity: one slot is $2,666.67; whole shares may pass it by less than one share's price ($100)
    p = param_vector(load_settings(max_concurrent_risk=0.05)).tolist()
    code = risk.should_allow_trade(p, False, qty, 100.0, False, 10_000.0, 10_000.0, 0, 0, 0.0, 1e9, 0.0)
    assert code == (OK if allowed else RISK_SLOT)


def test_market_fills_move_against_the_trader():
    assert fills.market_fill_price(100.0, True, 0.0002) == pytest.approx(100.02)
    assert fills.market_fill_price(100.0, False, 0.0002) == pytest.approx(99.98)
    assert fills.affordable(9_999.0, 1.0, 10_000.0) and not fills.affordable(9_999.0, 1.01, 10_000.0)


@pytest.mark.parametrize("old, step, new", [(-0.03, 0.01, -0.02), (-0.005, 0.01, 0.0), (0.02, 0.01, 0.02)])
def test_toward_zero_moves_a_negative_delta_up_and_never_past_zero(old, step, new):
    assert protections.tighten(protections.TOWARD_ZERO, old, step) == new


def test_at_least_and_at_most_only_tighten():
    assert protections.tighten(protections.AT_LEAST, 90, 120) == 120
    assert protections.tighten(protections.AT_LEAST, 150, 120) == 150
    assert protections.tighten(protections.AT_MOST, 0.7, 0.65) == 0.65
    assert protections.tighten(protections.AT_MOST, 0.6, 0.65) == 0.6

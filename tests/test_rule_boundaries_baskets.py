"""rules §8, basket router: each rule on both sides of its threshold, every other rule comfortably met.

MEGATECH has six members; without a filing or a volume spike GOOGL (Bench) never reports, so five report.
A member whose score is NaN has no usable score and does not report. Member scores below the stock cutoff
still count as evidence (only the basket thresholds decide). Ticks at hh:mm:00 and hh:mm:30 see the same
closed bar; Tier A reports every 30 s, Tier B every 60 s.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.helpers import DAY, at
from tests.rules_helpers import NAN, basket_row, engine, hold, intents, reject_all_pending

T = at(DAY, 11, 0)  # midday: a tick here sees the 10:59 bar

MEGA5 = ("AAPL", "MSFT", "AMZN", "META", "TSLA")  # the MEGATECH members that report without an event


def two_ticks(table, **kw):
    """Evaluate the baskets on two consecutive ticks (the second one may fire)."""
    e = engine(table, **kw)
    e.tick(T)
    e.tick(T + timedelta(seconds=30))
    return e


def fired(e, etf="SQQQ"):
    return [(r["symbol"], r["kind"], r["side"]) for r in intents(e, symbol=etf)]


# ------------------------------------------------------------------ negative ratio >= 60 %

def test_ratio_exactly_60_percent_fires_with_a_strong_mean():
    # 3 of 5 negative = 0.6; mean -0.34 is far below -0.12
    e = two_ticks({"AAPL": -0.6, "MSFT": -0.6, "AMZN": -0.6, "META": 0.05, "TSLA": 0.05})
    st = basket_row(e, "MEGATECH")
    assert (st["n_signals"], st["negative_ratio"], st["condition"]) == (5, 0.6, 1)
    assert st["mean_score"] == pytest.approx(-0.34)
    assert fired(e) == [("SQQQ", "basket", "buy")]


def test_ratio_of_50_percent_does_not_fire_even_with_a_strong_mean():
    # 2 of 4 reporting negative (TSLA has no score): 0.5 < 0.6, while n=4 >= 3 and mean -0.375 <= -0.12
    e = two_ticks({"AAPL": -0.8, "MSFT": -0.8, "AMZN": 0.05, "META": 0.05, "TSLA": NAN})
    st = basket_row(e, "MEGATECH")
    assert (st["n_signals"], st["negative_ratio"], st["condition"]) == (4, 0.5, 0)
    assert st["mean_score"] == pytest.approx(-0.375)
    assert fired(e) == []


def test_ratio_of_50_percent_with_all_six_members_reporting_does_not_fire():
    # GOOGL reports on a volume spike: 3 of 6 negative, mean -0.35
    table = {"AAPL": -0.8, "MSFT": -0.8, "AMZN": -0.8, "META": 0.1, "TSLA": 0.1, "GOOGL": 0.1}
    e = two_ticks(table, spikes={"GOOGL": 0.9}, reserve_tokens=4)
    st = basket_row(e, "MEGATECH")
    assert (st["n_signals"], st["negative_ratio"], st["condition"]) == (6, 0.5, 0)
    assert fired(e) == []


def test_a_zero_score_is_not_negative():
    # 2 negative + 3 exactly zero: ratio 0.4, mean -0.36
    e = two_ticks({"AAPL": -0.9, "MSFT": -0.9, "AMZN": 0.0, "META": 0.0, "TSLA": 0.0})
    st = basket_row(e, "MEGATECH")
    assert (st["n_signals"], st["negative_ratio"], st["condition"]) == (5, 0.4, 0)
    assert fired(e) == []


# ------------------------------------------------------------------ mean <= -0.12

def test_mean_exactly_minus_0_12_fires():
    e = two_ticks(dict.fromkeys(MEGA5, -0.12))  # mean is -0.12 exactly in floating point
    st = basket_row(e, "MEGATECH")
    assert (st["n_signals"], st["negative_ratio"], st["mean_score"], st["condition"]) == (5, 1.0, -0.12, 1)
    assert fired(e) == [("SQQQ", "basket", "buy")]
    assert "ETF score +0.120" in intents(e, symbol="SQQQ")[0]["reason"]  # the inverted basket score


def test_mean_of_minus_0_119_does_not_fire():
    e = two_ticks(dict.fromkeys(MEGA5, -0.119))
    st = basket_row(e, "MEGATECH")
    assert (st["n_signals"], st["negative_ratio"], st["condition"]) == (5, 1.0, 0)
    assert st["mean_score"] == pytest.approx(-0.119)
    assert fired(e) == []


# ------------------------------------------------------------------ at least 3 members reported

def test_two_reporting_members_do_not_fire():
    e = two_ticks({"AAPL": -0.5, "TSLA": -0.5, "MSFT": NAN, "AMZN": NAN, "META": NAN})
    st = basket_row(e, "MEGATECH")
    assert (st["n_signals"], st["negative_ratio"], st["condition"]) == (2, 1.0, 0)
    assert fired(e) == []


def test_three_reporting_members_fire():
    e = two_ticks({"AAPL": -0.5, "TSLA": -0.5, "MSFT": -0.5, "AMZN": NAN, "META": NAN})
    st = basket_row(e, "MEGATECH")
    assert (st["n_signals"], st["negative_ratio"], st["condition"]) == (3, 1.0, 1)
    assert fired(e) == [("SQQQ", "basket", "buy")]


# ------------------------------------------------------------------ two consecutive ticks

def test_one_tick_does_not_fire_two_do_and_a_break_resets_the_streak():
    # bars 10:59 (seen at 11:00) bearish, 11:00 (seen at 11:01) mildly bullish, then bearish again
    table = {m: (lambda ts: 0.05 if ts.to_pydatetime() == T else -0.5) for m in MEGA5}
    e = engine(table)
    steps = []
    for k in range(4):  # 11:00 cond, 11:01 broken, 11:02 cond, 11:03 cond
        e.tick(T + timedelta(minutes=k))
        st = basket_row(e, "MEGATECH")
        steps.append((st["condition"], st["consecutive"], len(intents(e, symbol="SQQQ"))))
    assert steps == [(1, 1, 0), (0, 0, 0), (1, 1, 0), (1, 2, 1)]
    assert intents(e, symbol="SQQQ")[0]["created_at"] == (T + timedelta(minutes=3)).isoformat()


# ------------------------------------------------------------------ member scores no older than 300 s

def _only_at_first_tick():
    """Every MEGATECH member reports -0.5 at the 11:00 tick and has no score afterwards."""
    first_bar = T - timedelta(minutes=1)
    return {m: (lambda ts: -0.5 if ts.to_pydatetime() == first_bar else NAN) for m in MEGA5}


def test_a_score_exactly_300_s_old_still_counts():
    e = engine(_only_at_first_tick())
    e.tick(T)
    e.tick(T + timedelta(seconds=300))
    st = basket_row(e, "MEGATECH")
    assert (st["n_signals"], st["condition"], st["consecutive"]) == (5, 1, 2)
    assert fired(e) == [("SQQQ", "basket", "buy")]


def test_a_score_older_than_300_s_does_not_count():
    e = engine(_only_at_first_tick())
    e.tick(T)
    e.tick(T + timedelta(seconds=301))
    st = basket_row(e, "MEGATECH")
    assert (st["n_signals"], st["condition"], st["consecutive"]) == (0, 0, 0)
    assert fired(e) == []


def test_stale_members_drop_out_one_by_one():
    # Tier B members stop reporting after 11:00; the Tier A ones keep reporting: 5 -> 2 members after 300 s
    first_bar = T - timedelta(minutes=1)
    table = {m: (lambda ts: -0.5 if ts.to_pydatetime() == first_bar else NAN) for m in ("MSFT", "AMZN", "META")}
    table |= {"AAPL": -0.5, "TSLA": -0.5}
    e = engine(table)
    e.tick(T)
    e.tick(T + timedelta(seconds=301))
    st = basket_row(e, "MEGATECH")
    assert (st["n_signals"], st["condition"]) == (2, 0)
    assert fired(e) == []


# ------------------------------------------------------------------ ETF lock: one intent per ETF per 90 s

@pytest.mark.parametrize("after_s, allowed", [(30, False), (60, False), (89, False), (90, True), (91, True)])
def test_etf_lock_holds_90_s_after_an_intent(after_s, allowed):
    e = two_ticks(dict.fromkeys(MEGA5, -0.3))
    first = intents(e, symbol="SQQQ")
    assert len(first) == 1
    t1 = T + timedelta(seconds=30)
    reject_all_pending(e, t1)  # so only the lock can stop a second intent
    e.tick(t1 + timedelta(seconds=after_s))
    st = basket_row(e, "MEGATECH")
    assert st["condition"] == 1 and st["consecutive"] == 3
    assert intents(e, id=first[0]["id"])[0]["status"] == "rejected"
    assert len(intents(e, symbol="SQQQ")) == (2 if allowed else 1)
    assert st["blocked_by"] == (None if allowed else "etf_lock")


def test_etf_lock_blocks_every_tick_inside_the_window_then_allows_one():
    e = two_ticks(dict.fromkeys(MEGA5, -0.3))
    t1 = T + timedelta(seconds=30)
    reject_all_pending(e, t1)
    for s in (60, 89):
        e.tick(t1 + timedelta(seconds=s))
        assert len(intents(e, symbol="SQQQ")) == 1, s
        assert basket_row(e, "MEGATECH")["blocked_by"] == "etf_lock"
    e.tick(t1 + timedelta(seconds=90))
    rows = intents(e, symbol="SQQQ")
    assert len(rows) == 2 and rows[1]["created_at"] == (t1 + timedelta(seconds=90)).isoformat()


# ------------------------------------------------------------------ conflicting holdings, held ETF

SEMIS_BEARISH = dict(table={"NVDA": -0.3, "AMD": -0.3, "AVGO": -0.3}, spikes={"AMD": 0.9, "AVGO": 0.9},
                     reserve_tokens=4)  # the Bench members report on a spike; enough Reserve tokens for both
MEGA_BEARISH = dict(table=dict.fromkeys(MEGA5, -0.3))


def _held_run(case, held):
    kw = dict(case)
    e = engine(kw.pop("table"), **kw)
    if held:
        hold(e, held, 10, 100.0)  # at the market price: no stop or take-profit exit
    e.tick(T)
    e.tick(T + timedelta(seconds=30))
    return e


@pytest.mark.parametrize("basket, etf, case, held, blocked", [
    ("MEGATECH", "SQQQ", MEGA_BEARISH, "QQQ", "conflict:QQQ"),
    ("MEGATECH", "SQQQ", MEGA_BEARISH, "TQQQ", "conflict:TQQQ"),
    ("SEMIS", "SOXS", SEMIS_BEARISH, "SOXX", "conflict:SOXX"),
    ("SEMIS", "SOXS", SEMIS_BEARISH, "SOXL", "conflict:SOXL"),
    ("MEGATECH", "SQQQ", MEGA_BEARISH, "SQQQ", "etf_held"),
    ("SEMIS", "SOXS", SEMIS_BEARISH, "SOXS", "etf_held"),
])
def test_conflicting_or_held_etf_blocks_the_basket(basket, etf, case, held, blocked):
    e = _held_run(case, held)
    st = basket_row(e, basket)
    assert st["condition"] == 1 and st["consecutive"] == 2  # the basket would fire
    assert st["blocked_by"] == blocked
    assert intents(e, symbol=etf) == []


@pytest.mark.parametrize("basket, etf, case, held", [
    ("MEGATECH", "SQQQ", MEGA_BEARISH, None),
    ("MEGATECH", "SQQQ", MEGA_BEARISH, "SOXX"),  # the other basket's conflicts are no conflict here
    ("MEGATECH", "SQQQ", MEGA_BEARISH, "SOXL"),
    ("SEMIS", "SOXS", SEMIS_BEARISH, None),
    ("SEMIS", "SOXS", SEMIS_BEARISH, "QQQ"),
    ("SEMIS", "SOXS", SEMIS_BEARISH, "TQQQ"),
])
def test_unrelated_holdings_do_not_block_the_basket(basket, etf, case, held):
    e = _held_run(case, held)
    st = basket_row(e, basket)
    assert st["blocked_by"] is None
    assert [(r["symbol"], r["kind"], r["side"]) for r in intents(e, symbol=etf)] == [(etf, "basket", "buy")]

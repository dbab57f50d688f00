"""rules §7, risk limits and sizing: each limit on both sides, every other limit comfortably met.

First through ``Engine.tick`` (a positive NVDA signal at $100 asks for a long entry; the decision row and the
intent's size show what the risk manager said), then on the public functions the spec names
(``check_signal_risk_feasibility``, ``calculate_position_size``, ``size_for``) for the exact boundaries.
Defaults: risk 0.5 % per trade, stop 1.5 %, max exposure 80 %, 3 guaranteed slots, 4 positions,
2 % concurrent risk, 2 % daily loss.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from core.config import load_settings
from core.engine.account import AccountState, PositionRisk, RiskManager, SizeResult
from core.rules import risk as rules
from tests.helpers import DAY, at, flat_bars
from tests.rules_helpers import before, decision_at, engine, hold, intents, outcome


def calculate_position_size(equity, price, **kw):
    """``core.rules.risk.calculate_position_size`` with its cap code as the name the engine stores."""
    qty, raw, capped = rules.calculate_position_size(equity, price, **kw)
    return SizeResult(qty, raw, rules.CAPPED_NAMES[capped])

T = at(DAY, 11, 0)
FIVE = ("NVDA", "TSLA", "AAPL", "MSFT", "AMZN")  # processed in this order on the first tick


def entry(e, sym="NVDA", now=T):
    """(outcome, qty of the entry intent or None) for ``sym`` at ``now``."""
    rows = intents(e, symbol=sym, kind="entry")
    return outcome(decision_at(e, sym, now)), (rows[-1]["qty"] if rows else None)


# ------------------------------------------------------------------ max positions (4)

def test_max_positions_fourth_entry_passes_fifth_is_refused():
    # small slots so exposure is far from its limit; intents waiting for Approve count as positions, and the
    # refusal says how many of the four slots they hold
    e = engine(dict.fromkeys(FIVE, 0.6), min_slots=10)
    e.tick(T)
    assert [entry(e, s) for s in FIVE] == [("actionable", 80)] * 4 + [("risk_max_positions (4 pending approvals)",
                                                                        None)]


def test_max_positions_names_no_pending_approval_when_orders_hold_the_slots():
    # AUTO_MODE: the four entries are submitted at once; their open orders hold the slots, nobody is to approve
    e = engine(dict.fromkeys(FIVE, 0.6), min_slots=10, auto_mode=True)
    e.tick(T)
    assert [entry(e, s) for s in FIVE] == [("actionable", 80)] * 4 + [("risk_max_positions", None)]
    assert {r["status"] for r in intents(e, kind="entry")} == {"submitted"}


def test_a_rejected_approval_frees_its_slot_and_leaves_the_count():
    # two held positions and two entries waiting for Approve fill the four slots; rejecting one frees a slot
    e = engine({"NVDA": before(T + timedelta(minutes=2), 0.0, 0.6), "TSLA": 0.6, "AAPL": 0.6}, min_slots=10,
               intent_ttl_s=3600)
    for sym in ("QQQ", "SOXX"):
        hold(e, sym, 10, 100.0)
    e.tick(T)
    assert [entry(e, s)[0] for s in ("TSLA", "AAPL")] == ["actionable", "actionable"]
    t = T + timedelta(minutes=3)
    e.tick(t)
    assert entry(e, now=t)[0] == "risk_max_positions (2 pending approvals)"
    e.store.send_command("reject", {"intent_id": intents(e, symbol="TSLA")[0]["id"]}, who="trader", now=t)
    t2 = t + timedelta(minutes=1)
    e.tick(t2)  # the rejection is applied first: three slots taken, NVDA gets the fourth
    assert entry(e, now=t2)[0] == "actionable"


# ------------------------------------------------------------------ max exposure (80 %) and the slot cap

def test_max_exposure_takes_the_last_dollars_then_refuses():
    # 3 x 266 x $100 = 79,800; the fourth gets the 200 left (2 shares); nothing is left for the fifth.
    # MIN_POSITION_FRACTION=0: the exposure cap alone (at its default 0.25, 2 shares are too small: below)
    e = engine(dict.fromkeys(FIVE, 0.6), max_positions=10, min_position_fraction=0.0)
    e.tick(T)
    assert [entry(e, s) for s in FIVE] == [("actionable", 266)] * 3 + [("actionable", 2), ("risk_exposure", None)]
    assert "capped by exposure" in intents(e, symbol="MSFT")[0]["reason"]


# ------------------------------------------------------------------ minimum position (MIN_POSITION_FRACTION, 0.25)

@pytest.mark.parametrize("fraction, expected", [
    (2 / 266, ("actionable", 2)),  # 2 shares are exactly this fraction of a full 266-share position
    (2.001 / 266, ("risk_size_too_small", None)),  # a hair more: the residual is too small
    (0.25, ("risk_size_too_small", None)),  # the default
])
def test_a_residual_entry_below_the_minimum_fraction_is_suppressed(fraction, expected):
    # as above: three full entries leave $200 of exposure, 2 shares at $100, for the fourth (MSFT)
    e = engine(dict.fromkeys(FIVE, 0.6), max_positions=10, min_position_fraction=fraction)
    e.tick(T)
    assert [entry(e, s) for s in FIVE[:3]] == [("actionable", 266)] * 3
    assert entry(e, "MSFT") == expected


@pytest.mark.parametrize("price, qty, capped", [(100.0, 26, True), (102.56, 26, True), (102.57, 25, True),
                                                 (2666.66, 1, False)])  # by risk: 50 / 40.00 = 1.25 shares
def test_per_position_cap_10k_equity_at_most_2667(price, qty, capped):
    # max_exposure x equity / min_slots = 0.8 x 10,000 / 3 = 2,666.67 per position
    e = engine({"NVDA": 0.6}, prices={"NVDA": price}, sim_start_cash=10_000)
    e.tick(T)
    assert entry(e) == ("actionable", qty)
    assert qty * price <= 2666.67 < (qty + 1) * price
    assert ("capped by slot" in intents(e, symbol="NVDA")[0]["reason"]) == capped


def test_per_position_cap_refuses_a_share_dearer_than_the_slot():
    e = engine({"NVDA": 0.6}, prices={"NVDA": 2666.67}, sim_start_cash=10_000)
    e.tick(T)
    assert entry(e) == ("risk_exposure", None)


# ------------------------------------------------------------------ sizing formula

@pytest.mark.parametrize("overrides, price, qty", [
    ({"risk_per_trade": 0.003}, 100.0, 200),  # 300 / (100 x 1.5 %)
    ({"risk_per_trade": 0.003}, 90.0, 222),  # 300 / 1.35 = 222.2
    ({"risk_per_trade": 0.003}, 70.0, 285),  # 300 / 1.05 = 285.7: whole shares, never rounded up
    ({"risk_per_trade": 0.003, "stop_loss_pct": 0.02}, 100.0, 150),  # 300 / 2
    ({"risk_per_trade": 0.002, "max_concurrent_risk": 0.01}, 100.0, 133),  # the log's test profile
])
def test_position_size_is_risk_over_stop_distance(overrides, price, qty):
    e = engine({"NVDA": 0.6}, prices={"NVDA": price}, **overrides)
    e.tick(T)
    assert entry(e) == ("actionable", qty)
    row = intents(e, symbol="NVDA")[0]
    assert "capped" not in row["reason"]
    assert row["stop_price"] == pytest.approx(price * (1 - overrides.get("stop_loss_pct", 0.015)), abs=0.01)


# ------------------------------------------------------------------ daily loss limit (2 % of start-of-day equity)

def soxx_path(after):
    """SOXX at $200 until 11:00, then ``after``."""
    def edit(sym, idx, arr):
        if sym == "SOXX":
            for k in ("open", "high", "low", "close"):
                arr[k][:] = 200.0
                arr[k][idx >= T] = after
    return edit


@pytest.mark.parametrize("soxx_after, expected", [(180.01, "actionable"), (180.0, "risk_daily_loss")])
def test_daily_loss_limit_halts_new_entries_at_2_percent(soxx_after, expected):
    # 80,000 cash + 100 SOXX at $200: 100,000 at the day's first tick; SOXX at 180 is a loss of exactly 2 %.
    # SOXX's stop (182 x 98.5 % = 179.27) and take-profit are not reached; concurrent risk stays small.
    e = engine({"NVDA": before(T, 0.0, 0.6)}, bars=flat_bars([DAY], overrides=soxx_path(soxx_after)),
               sim_start_cash=80_000, take_profit_pct=0.5)
    hold(e, "SOXX", 100, 182.0)
    e.tick(at(DAY, 10, 30))  # the start-of-day equity is taken here
    t = T + timedelta(minutes=5)
    e.tick(t)
    assert entry(e, now=t) == (expected, 261 if expected == "actionable" else None)  # 0.8 x 98,001 / 3 / $100


# ------------------------------------------------------------------ max concurrent risk (2 %)

@pytest.mark.parametrize("avg, expected", [(186.8, "actionable"), (186.7, "risk_concurrent")])
def test_concurrent_risk_limit(avg, expected):
    # 80,000 cash + 100 SOXX at $200 = 100,000. SOXX's stop is avg x 98.5 %: its stop risk is
    # 100 x (200 - 183.998) = 1,600.20 (avg 186.8) or 1,610.05 (avg 186.7); a new 266-share entry
    # at $100 adds 399: 1.9992 % passes, 2.0091 % is refused.
    e = engine({"NVDA": 0.6}, prices={"SOXX": 200.0}, sim_start_cash=80_000, take_profit_pct=0.5)
    hold(e, "SOXX", 100, avg)
    e.tick(T)
    assert entry(e) == (expected, 266 if expected == "actionable" else None)


# ------------------------------------------------------------------ the public functions, exactly at the limits

def state(equity=100_000.0, sod=None, positions=(), pending_notional=0.0, pending=0, bp=None):
    return AccountState(equity, equity, equity if bp is None else bp, equity if sod is None else sod,
                        tuple(positions), pending_notional, pending)


def pos(sym, qty=10, px=100.0, stop=None):
    return PositionRisk(sym, qty, px, px, px * 0.985 if stop is None else stop)


RM = RiskManager(load_settings())


@pytest.mark.parametrize("n_pos, n_pending, ok", [(3, 0, True), (2, 1, True), (4, 0, False), (3, 1, False),
                                                  (0, 4, False)])
def test_feasibility_max_positions(n_pos, n_pending, ok):
    st = state(positions=[pos(s) for s in "ABCD"[:n_pos]], pending=n_pending)
    assert RM.check_signal_risk_feasibility(st, 100.0) == ((True, "ok") if ok else (False, "risk_max_positions"))


@pytest.mark.parametrize("equity, ok", [(98_000.01, True), (98_000.0, False), (97_000.0, False)])
def test_feasibility_daily_loss_exactly_2_percent_halts(equity, ok):
    st = state(equity=equity, sod=100_000.0)
    assert RM.check_signal_risk_feasibility(st, 100.0) == ((True, "ok") if ok else (False, "risk_daily_loss"))


@pytest.mark.parametrize("stop, ok", [(83.99, True), (83.98, False)])
def test_feasibility_concurrent_risk_exactly_2_percent_passes(stop, ok):
    # open risk 100 x (100 - 83.99) = 1,601 + the new 266 x $100 x 1.5 % = 399: exactly 2,000 = 2 %
    st = state(positions=[pos("A", qty=100, stop=stop)])
    assert RM.size_for(st, 100.0).qty == 266
    assert RM.check_signal_risk_feasibility(st, 100.0) == ((True, "ok") if ok else (False, "risk_concurrent"))


# one share is far below MIN_POSITION_FRACTION of a full position: these two check the caps alone (fraction 0)
RM_ANY_SIZE = RiskManager(load_settings(min_position_fraction=0.0))


@pytest.mark.parametrize("pending_notional, ok", [(79_900.0, True), (79_900.01, False)])
def test_feasibility_exposure_needs_room_for_one_share(pending_notional, ok):
    st = state(pending_notional=pending_notional, pending=1)
    assert RM_ANY_SIZE.check_signal_risk_feasibility(st, 100.0) == ((True, "ok") if ok else (False, "risk_exposure"))
    assert RM_ANY_SIZE.size_for(st, 100.0).qty == (1 if ok else 0)


@pytest.mark.parametrize("bp, ok", [(100.0, True), (99.99, False)])
def test_feasibility_buying_power_for_one_share(bp, ok):
    assert RM_ANY_SIZE.check_signal_risk_feasibility(state(bp=bp), 100.0) == (
        (True, "ok") if ok else (False, "risk_buying_power"))


@pytest.mark.parametrize("pending_notional, qty, ok", [(73_300.0, 67, True), (73_400.0, 66, False)])
def test_feasibility_minimum_position_is_a_quarter_of_a_full_one(pending_notional, qty, ok):
    # a full position at $100 is 266 shares (the slot: 0.8 x 100,000 / 3; the risk rule alone gives 333);
    # a quarter of it is 66.5: 67 shares of exposure left pass, 66 do not. Everything else is far from its limit.
    st = state(pending_notional=pending_notional, pending=1)
    assert RM.full_size(st, 100.0) == 266 and RM.size_for(st, 100.0).qty == qty
    assert RM.check_signal_risk_feasibility(st, 100.0) == ((True, "ok") if ok else (False, "risk_size_too_small"))


@pytest.mark.parametrize("bp, ok", [(6_700.0, True), (6_699.99, False)])
def test_feasibility_minimum_position_also_when_buying_power_cuts_the_size(bp, ok):
    assert RM.check_signal_risk_feasibility(state(bp=bp), 100.0) == (
        (True, "ok") if ok else (False, "risk_size_too_small"))


def test_the_risk_rule_alone_never_makes_an_entry_too_small():
    # a small risk per trade sizes every entry small (40 shares): that is a full position, not a residual
    rm = RiskManager(load_settings(risk_per_trade=0.0006))
    assert rm.full_size(state(), 100.0) == 40 == rm.size_for(state(), 100.0).qty
    assert rm.check_signal_risk_feasibility(state(), 100.0) == (True, "ok")


@pytest.mark.parametrize("approvals, reason", [
    (0, "risk_max_positions"), (1, "risk_max_positions (1 pending approval)"),
    (2, "risk_max_positions (2 pending approvals)")])
def test_feasibility_max_positions_names_the_pending_approvals(approvals, reason):
    st = AccountState(100_000.0, 100_000.0, 100_000.0, 100_000.0, (pos("A"), pos("B")), 2_000.0, 2, approvals)
    assert RM.check_signal_risk_feasibility(st, 100.0) == (False, reason)
    assert RM.should_allow_trade(st, "NVDA", "buy", 10, 100.0) == (False, reason)


SPEC = dict(risk_per_trade=0.005, stop_loss_pct=0.015, max_exposure=0.8, min_slots=3)


@pytest.mark.parametrize("price, qty, capped_by", [(1.0, 2666, "slot"), (2666.66, 1, None), (2666.67, 0, "slot")])
def test_slot_cap_for_10k_equity_is_2667(price, qty, capped_by):
    r = calculate_position_size(10_000, price, **SPEC)
    assert (r.qty, r.capped_by) == (qty, capped_by)
    assert RM.size_for(state(equity=10_000.0), price).qty == qty


def test_size_is_risk_over_stop_distance_before_the_caps():
    assert calculate_position_size(100_000, 100.0, **SPEC).raw_qty == 333  # 500 / 1.5
    r = calculate_position_size(100_000, 100.0, **{**SPEC, "risk_per_trade": 0.003})
    assert (r.qty, r.raw_qty, r.capped_by) == (200, 200, None)  # 300 / 1.5, exactly
    r = calculate_position_size(100_000, 70.0, **{**SPEC, "risk_per_trade": 0.003})
    assert (r.qty, r.capped_by) == (285, None)  # 285.7 shares: rounded down
    r = calculate_position_size(100_000, 100.0, **{**SPEC, "risk_per_trade": 0.003, "stop_loss_pct": 0.02})
    assert (r.qty, r.capped_by) == (150, None)

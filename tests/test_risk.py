import pytest

from core.config import load_settings
from core.engine.account import AccountState, PositionRisk, RiskManager, SizeResult
from core.rules import risk as rules
from core.rules.risk import kelly_margin


def calculate_position_size(equity, price, **kw):
    """``core.rules.risk.calculate_position_size`` with its cap code as the name the engine stores."""
    qty, raw, capped = rules.calculate_position_size(equity, price, **kw)
    return SizeResult(qty, raw, rules.CAPPED_NAMES[capped])

SPEC = dict(risk_per_trade=0.005, stop_loss_pct=0.015, max_exposure=0.8, min_slots=3)


def test_aapl_example_144_shares_before_caps():
    r = calculate_position_size(100_000, 230.91, **SPEC)
    assert r.raw_qty == 144  # 500 / (230.91 * 0.015) = 144.36
    assert r.qty == 115 and r.capped_by == "slot"  # 26,667 / 230.91


@pytest.mark.parametrize("price", [1.0, 7.5, 33.0, 230.91, 999.0])
def test_ten_thousand_equity_caps_a_position_at_2667(price):
    r = calculate_position_size(10_000, price, **SPEC)
    assert r.qty * price <= 2_666.67 + 1e-6
    assert (r.qty + 1) * price > min(2_666.67, (r.raw_qty) * price) - 1e-6 or r.qty == r.raw_qty


def test_caps_by_remaining_exposure_and_buying_power():
    r = calculate_position_size(100_000, 100.0, **SPEC, current_exposure=75_000)
    assert r.qty == 50 and r.capped_by == "exposure"
    r = calculate_position_size(100_000, 100.0, **SPEC, buying_power=1_234)
    assert r.qty == 12 and r.capped_by == "buying_power"
    assert calculate_position_size(0, 100.0, **SPEC).qty == 0


def state(equity=100_000.0, sod=100_000.0, positions=(), cash=None, pending=0):
    return AccountState(equity, cash if cash is not None else equity, cash if cash is not None else equity, sod,
                        tuple(positions), 0.0, pending)


def pos(sym, qty=100, px=100.0):
    return PositionRisk(sym, qty, px, px, px * (1 - 0.015))


def test_feasibility_reasons_in_order():
    rm = RiskManager(load_settings())
    assert rm.check_signal_risk_feasibility(state(), 100.0) == (True, "ok")
    assert rm.check_signal_risk_feasibility(state(equity=97_900, sod=100_000), 100.0) == (False, "risk_daily_loss")
    four = [pos(s) for s in "ABCD"]
    assert rm.check_signal_risk_feasibility(state(positions=four), 100.0) == (False, "risk_max_positions")
    assert rm.check_signal_risk_feasibility(state(pending=4), 100.0) == (False, "risk_max_positions")
    # 3 positions each risking 0.6 % leave 0.2 % < the next trade's 0.4 %
    big = [PositionRisk(s, 100, 100.0, 100.0, 94.0) for s in "ABC"]
    assert rm.check_signal_risk_feasibility(state(positions=big), 100.0) == (False, "risk_concurrent")
    assert rm.check_signal_risk_feasibility(state(), None) == (False, "risk_no_price")


def test_should_allow_trade_rechecks_the_intent_size():
    rm = RiskManager(load_settings())
    assert rm.should_allow_trade(state(), "AAPL", "buy", 115, 230.91) == (True, "ok")
    assert rm.should_allow_trade(state(), "AAPL", "buy", 200, 230.91)[1] == "risk_slot"
    assert rm.should_allow_trade(state(positions=[pos("AAPL")]), "AAPL", "buy", 10, 100.0)[1] == "risk_already_held"
    assert rm.should_allow_trade(state(cash=500), "AAPL", "buy", 10, 100.0)[1] == "risk_buying_power"
    assert rm.should_allow_trade(state(equity=90_000), "AAPL", "sell", 10, 100.0, is_exit=True) == (True, "ok")


def test_portfolio_summary_shape_and_status():
    rm = RiskManager(load_settings())
    s = rm.portfolio_summary(state())
    assert s["current_risk_pct"] == 0 and s["max_risk_pct"] == 0.02 and s["risk_status"] == "safe"
    assert s["remaining_capacity"] == 0.02 and s["daily_loss_limit"] == 0.02 and s["risk_per_trade"] == 0.005
    assert s["max_positions"] == 4 and s["stop_loss_pct"] == 0.015
    caution = rm.portfolio_summary(state(positions=[PositionRisk(x, 400, 100.0, 100.0, 98.5) for x in "ABC"]))
    assert caution["risk_status"] == "caution" and abs(caution["current_risk_pct"] - 0.018) < 1e-9
    assert rm.portfolio_summary(state(equity=97_000))["risk_status"] == "blocked"


def test_kelly_margin_matches_the_log_figure():
    # f* = W - (1-W)/R; with W=0.5 and R=0.5/0.157, f* = 0.343 = 68.6 x the 0.5 % risked per trade
    k = kelly_margin(0.5, 0.5 / 0.157, 0.005)
    assert k["kelly_fraction"] == pytest.approx(0.343) and k["margin"] == pytest.approx(68.6)
    assert not k["warning"]
    assert kelly_margin(0.3, 1.0, 0.005)["warning"]  # negative edge


@pytest.mark.parametrize(("payoff", "warns"), [(2.0, False), (1.99, True)], ids=["margin 1", "margin 0.99"])
def test_kelly_warns_below_a_margin_of_1_not_at_it(payoff, warns):
    # rules §7: warn below 1. W = 0.5 and R = 2: f* = 0.5 - 0.5 / 2 = 0.25, exactly the 25 % risked: margin 1
    k = kelly_margin(0.5, payoff, 0.25)
    assert k["warning"] is warns
    if not warns:
        assert k["margin"] == 1.0

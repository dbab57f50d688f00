"""rules §10, protections: every rule's minimum sample on both sides, every other condition comfortably met.

One sample short of its minimum (``Condition.min_sample`` in the rule's data) a rule does not fire however bad
the figure looks; at the minimum it fires. The rows a rule reads are written straight into the engine's tables
(a fresh engine on a flat market, nothing else in them), then ``Engine.run_protections`` runs that one rule, as
the engine does after a fill and after each KPI snapshot. See tests/test_protections.py for the rules through
``Engine.tick``.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from core import views
from core.clock import NY
from core.config import load_settings
from core.rules.protections import RULES, ProtectionRule
from tests.helpers import DAY, ScriptedStrategy, at, flat_bars, make_engine

NOW = at(DAY, 12, 0)


def fresh(**overrides):
    return make_engine(flat_bars([DAY]), ScriptedStrategy(lambda s, t: 0.0), **overrides)


def rule(name: str) -> ProtectionRule:
    return next(r for r in RULES if r.name == name)


def minimum(name: str, sample: str, **overrides) -> int:
    """The minimum of ``sample`` in the rule's data (not restated here: the test follows the data)."""
    s = load_settings(**overrides)
    return next(c.minimum(s) for c in rule(name).all_of + rule(name).any_of if c.sample == sample)


def fired(e, name: str) -> list:
    return e.run_protections(NOW, (rule(name),))


def exits(e, n: int, *, stop_outs: int) -> None:
    """``n`` trades closed in the last half hour, the first ``stop_outs`` of them by the stop-loss leg."""
    for i in range(n):
        t = NOW - timedelta(minutes=30) + timedelta(minutes=i)
        e.store.insert("trades", {"symbol": f"S{i}", "kind": "entry", "qty": 1, "entry_ts": (t - timedelta(
            minutes=5)).isoformat(), "entry_price": 100.0, "exit_ts": t.isoformat(), "exit_price": 98.5,
            "pnl": -1.5, "ret": -0.015, "exit_reason": "stop_loss" if i < stop_outs else "take_profit",
            "mae": -0.015, "mfe": 0.0, "fees": 0.0})
    e.store.commit()


def actionable(e, n: int, *, flip: bool) -> None:
    """``n`` actionable NVDA signals two minutes apart in the last hour; ``flip``: each one reverses the last
    (every one after the first is a flip-flop), else all positive (none is)."""
    for i in range(n):
        t = NOW - timedelta(minutes=50) + timedelta(minutes=2 * i)
        score = (0.6 if i % 2 == 0 else -0.6) if flip else 0.6
        e.store.insert("signals", {"ts": t.isoformat(), "symbol": "NVDA", "tier": "A", "score": score,
                                   "cutoff": 0.28, "decision": "actionable", "action": "long", "price": 100.0})
    e.store.commit()


# ------------------------------------------------------------------ signal_quality (1 h)

def test_signal_quality_ignores_a_single_stop_out():
    # the reported case: plenty of signals, one exit, stopped out: a 100 % stop-out rate over one exit
    e = fresh()
    actionable(e, 20, flip=False)
    exits(e, 1, stop_outs=1)
    assert fired(e, "signal_quality") == []


@pytest.mark.parametrize("short", [1, 0], ids=["min-1", "min"])
def test_signal_quality_stop_out_rate_needs_its_minimum_of_exits(short):
    n = minimum("signal_quality", "exits") - short
    e = fresh()
    actionable(e, 20, flip=False)  # actionable comfortably above its minimum, no flip-flop
    exits(e, n, stop_outs=n)  # every exit stopped out: 100 % >= 40 %
    got = fired(e, "signal_quality")
    assert bool(got) == (short == 0), got
    if got:
        assert got[0].figures["exits"] == n and f"stop_out_rate 1 >= 0.40 ({n} exits)" in got[0].why


@pytest.mark.parametrize("short", [1, 0], ids=["min-1", "min"])
def test_signal_quality_flip_flop_rate_needs_its_minimum_of_actionable_signals(short):
    n = minimum("signal_quality", "actionable") - short
    e = fresh()
    actionable(e, n, flip=True)  # (n - 1) / n flip-flops: far above 25 %; no exits at all
    got = fired(e, "signal_quality")
    assert bool(got) == (short == 0), got
    if got:
        assert got[0].figures["actionable"] == n and got[0].figures["flip_flops"] == n - 1


# ------------------------------------------------------------------ llm_or_overflow (2 h)

@pytest.mark.parametrize("short", [1, 0], ids=["min-1", "min"])
def test_llm_surge_needs_its_minimum_of_calls(short):
    n = minimum("llm_or_overflow", "llm_calls") - short
    # a surge threshold of 1 call an hour: any n here is comfortably a surge, only the sample decides
    e = fresh(protection_llm_surge_per_hour=1.0)
    for i in range(n):
        t = NOW - timedelta(minutes=10) + timedelta(seconds=30 * i)
        e.store.insert("llm_calls", {"ts": t.isoformat(), "day": DAY.isoformat(), "month": DAY.isoformat()[:7],
                                     "symbol": "NVDA", "kind": "filing", "status": "done", "called": 1,
                                     "cost": 0.1})
    e.store.commit()
    got = fired(e, "llm_or_overflow")
    assert bool(got) == (short == 0), got
    if got:
        assert got[0].figures["llm_calls"] == n and got[0].changes == {"reserve_fallback": False}


@pytest.mark.parametrize("short", [1, 0], ids=["min-1", "min"])
def test_tier_a_overflow_needs_its_minimum_of_requests(short):
    n = minimum("llm_or_overflow", "tier_a_requested") - short
    e = fresh()
    minute = (NOW - timedelta(minutes=10)).astimezone(NY)
    # one minute in which every Tier-A request was denied: 100 % overflow, far above 15 %
    e.store.insert("token_stats", {"minute": minute.isoformat(), "tier": "A", "requested": n, "granted": 0,
                                   "borrowed": 0})
    e.store.commit()
    got = fired(e, "llm_or_overflow")
    assert bool(got) == (short == 0), got
    if got:
        assert got[0].figures["tier_a_overflow_max"] == 1.0 and got[0].figures["tier_a_requested"] == n


# ------------------------------------------------------------------ stoploss_guard and max_drawdown

@pytest.mark.parametrize("short", [1, 0], ids=["min-1", "min"])
def test_stoploss_guard_needs_its_count_of_stop_outs(short):
    n = minimum("stoploss_guard", "stop_outs") - short
    assert minimum("stoploss_guard", "stop_outs") == load_settings().protection_stoploss_count  # its trade_limit
    e = fresh()
    exits(e, n, stop_outs=n)
    got = fired(e, "stoploss_guard")
    assert bool(got) == (short == 0), got
    if got:
        assert got[0].pause_until == NOW + timedelta(seconds=load_settings().protection_stoploss_pause_s)


@pytest.mark.parametrize("short", [1, 0], ids=["min-1", "min"])
def test_max_drawdown_needs_its_minimum_of_equity_snapshots(short):
    n = minimum("max_drawdown", "equity_samples") - short
    e = fresh()
    # from 100,000 down to 90,000 on the last snapshot: a 10 % drawdown, twice the 5 % limit
    for i in range(n):
        t = NOW - timedelta(minutes=n - i)
        eq = 90_000.0 if i == n - 1 else 100_000.0
        e.store.insert("equity", {"ts": t.isoformat(), "equity": eq, "cash": eq, "exposure": 0.0})
    e.store.commit()
    got = fired(e, "max_drawdown")
    assert bool(got) == (short == 0), got
    if got:
        assert got[0].figures["equity_drawdown"] == pytest.approx(0.1) and got[0].figures["equity_samples"] == n


def test_every_rule_states_its_minimum_sample_for_the_risk_page():
    s = load_settings()
    table = views.protection_rules(s).set_index("rule")
    assert list(table.index) == [r.name for r in RULES]
    for r in RULES:
        shown = table.loc[r.name, "minimum sample"]
        assert shown, r.name  # no rule without a minimum
        for c in r.all_of + r.any_of:
            assert f"{c.sample} >= {c.minimum(s)}" in shown, (r.name, shown)
    assert "exits >= 5 (for stop_out_rate)" in table.loc["signal_quality", "minimum sample"]

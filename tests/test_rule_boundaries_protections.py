"""rules §10, protections: every rule's minimum sample on both sides, every other condition comfortably met.

One sample short of its minimum (``Condition.min_sample`` in the rule's data) a rule does not fire however bad
the figure looks; at the minimum it fires. The rows a rule reads are written straight into the engine's tables
(a fresh engine on a flat market, nothing else in them), then ``Engine.run_protections`` runs that one rule, as
the engine does after a fill and after each KPI snapshot. See tests/test_protections.py for the rules through
``Engine.tick``.

The second half pins every rule at the defaults docs/rules.md §10 states (threshold, minimum sample, window, pause
or cool-off), each number written here literally: moved in the code, a test fails.
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
    """``n`` trades closed in the last half hour (at most 100), the first ``stop_outs`` of them by the stop-loss
    leg."""
    assert n <= 100
    for i in range(n):
        t = NOW - timedelta(minutes=30) + timedelta(seconds=15 * i)
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
    assert list(table.index) == [*(r.name for r in RULES), "Kelly figures (Risk gauges)"]  # with the Kelly minimum
    assert table.loc["Kelly figures (Risk gauges)", "minimum sample"] == "30 closed trades, wins and losses"
    for r in RULES:
        shown = table.loc[r.name, "minimum sample"]
        assert shown, r.name  # no rule without a minimum
        for c in r.all_of + r.any_of:
            assert f"{c.sample} >= {c.minimum(s)}" in shown, (r.name, shown)
    assert "exits >= 5 (for stop_out_rate)" in table.loc["signal_quality", "minimum sample"]


# ------------------------------------------------------------------ at the defaults of docs/rules.md §10
# Every number below is written as docs/rules.md states it, never read back from the rules or the settings: a
# threshold, a minimum sample or a pause moved in the code makes one of these fail. Each test sits on both sides of
# one number with the rule's other conditions comfortably met.

def equity_rows(e, values: list[float]) -> None:
    """One equity snapshot a minute, the last one a minute before NOW."""
    n = len(values)
    for i, eq in enumerate(values):
        t = NOW - timedelta(minutes=n - i)
        e.store.insert("equity", {"ts": t.isoformat(), "equity": eq, "cash": eq, "exposure": 0.0})
    e.store.commit()


@pytest.mark.parametrize(("trough", "fires"), [(95_000.0, True), (95_010.0, False)], ids=["5%", "4.99%"])
def test_max_drawdown_fires_at_5_percent_not_at_4_99(trough, fires):
    e = fresh()
    equity_rows(e, [100_000.0] * 19 + [trough])  # 20 snapshots: twice the minimum of 10
    got = fired(e, "max_drawdown")
    assert bool(got) == fires, got
    if got:
        assert got[0].figures["equity_drawdown"] == pytest.approx(0.05)


@pytest.mark.parametrize(("n", "fires"), [(9, False), (10, True)])
def test_max_drawdown_needs_10_equity_snapshots(n, fires):
    e = fresh()
    equity_rows(e, [100_000.0] * (n - 1) + [80_000.0])  # a 20 % drawdown, four times the 5 % limit
    assert bool(fired(e, "max_drawdown")) == fires


def test_max_drawdown_pauses_entries_for_7200_s():
    e = fresh()
    equity_rows(e, [100_000.0] * 19 + [90_000.0])
    [f] = fired(e, "max_drawdown")
    assert f.pause_until == NOW + timedelta(seconds=7200)
    assert e.protections.entries_paused_by(NOW + timedelta(seconds=7199)) == "max_drawdown"
    assert e.protections.entries_paused_by(NOW + timedelta(seconds=7200)) is None
    assert e.protections.cooling_off("max_drawdown", NOW + timedelta(seconds=7199))
    assert not e.protections.cooling_off("max_drawdown", NOW + timedelta(seconds=7200))


def test_max_drawdown_looks_back_one_day():
    def with_peak(ago_s: int):
        """A 200,000 peak ``ago_s`` before NOW, then 19 snapshots at 100,000 and one at 96,000 (4 % below)."""
        e = fresh()
        rows = [(ago_s, 200_000.0), *((86_280 - 60 * k, 100_000.0) for k in range(19)), (60, 96_000.0)]
        for ago, eq in rows:
            e.store.insert("equity", {"ts": (NOW - timedelta(seconds=ago)).isoformat(), "equity": eq, "cash": eq,
                                      "exposure": 0.0})
        e.store.commit()
        return e

    assert fired(with_peak(86_460), "max_drawdown") == []  # 24 h + 1 min ago: outside; 4 % inside the day
    assert fired(with_peak(86_340), "max_drawdown")  # 24 h - 1 min ago: inside, a 52 % drawdown


def overflow_minute(e, requested: int, denied: int) -> None:
    minute = (NOW - timedelta(minutes=10)).astimezone(NY)
    e.store.insert("token_stats", {"minute": minute.isoformat(), "tier": "A", "requested": requested,
                                   "granted": requested - denied, "borrowed": 0})
    e.store.commit()


@pytest.mark.parametrize(("requested", "denied", "fires"), [(1000, 150, True), (1000, 149, False)],
                         ids=["15%", "14.9%"])
def test_tier_a_overflow_fires_at_15_percent_not_at_14_9(requested, denied, fires):
    e = fresh(llm_min_signal_score=0.6)  # the relaxed minimum: the firing raises it to 0.65
    overflow_minute(e, requested, denied)
    got = fired(e, "llm_or_overflow")
    assert bool(got) == fires, got
    if got:
        assert got[0].changes == {"llm_min_signal_score": 0.65, "reserve_fallback": False}


@pytest.mark.parametrize(("n", "fires"), [(29, False), (30, True)])
def test_tier_a_overflow_needs_30_requests(n, fires):
    e = fresh()
    overflow_minute(e, n, n)  # every request denied: 100 %
    assert bool(fired(e, "llm_or_overflow")) == fires


def llm_calls(e, n: int, minutes_ago: int = 100) -> None:
    """``n`` calls to the model, 30 s apart, from ``minutes_ago`` on."""
    for i in range(n):
        t = NOW - timedelta(minutes=minutes_ago) + timedelta(seconds=30 * i)
        e.store.insert("llm_calls", {"ts": t.isoformat(), "day": DAY.isoformat(), "month": DAY.isoformat()[:7],
                                     "symbol": "NVDA", "kind": "filing", "status": "done", "called": 1, "cost": 0.1})
    e.store.commit()


@pytest.mark.parametrize(("n", "fires"), [(60, True), (59, False)], ids=["30/h", "29.5/h"])
def test_llm_surge_fires_at_30_calls_an_hour_over_its_two_hours(n, fires):
    e = fresh()
    llm_calls(e, n)  # n calls inside the 2 h window: n / 2 an hour
    got = fired(e, "llm_or_overflow")
    assert bool(got) == fires, got
    if got:
        assert got[0].figures["llm_calls_per_hour"] == 30.0


@pytest.mark.parametrize(("n", "fires"), [(9, False), (10, True)])
def test_llm_surge_needs_10_calls(n, fires):
    e = fresh(protection_llm_surge_per_hour=1.0)  # any n here is a surge: only the sample decides
    llm_calls(e, n, minutes_ago=10)
    assert bool(fired(e, "llm_or_overflow")) == fires


def test_llm_or_overflow_cools_off_for_7200_s():
    e = fresh()
    overflow_minute(e, 100, 100)
    [f] = fired(e, "llm_or_overflow")
    assert f.until == NOW + timedelta(seconds=7200) and f.pause_until is None
    assert e.protections.cooling_off("llm_or_overflow", NOW + timedelta(seconds=7199))
    assert not e.protections.cooling_off("llm_or_overflow", NOW + timedelta(seconds=7200))
    assert e.protections.entries_paused_by(NOW) is None  # it tightens, it does not pause


@pytest.mark.parametrize(("n", "fires"), [(2, False), (3, True)])
def test_stoploss_guard_fires_on_3_stop_outs(n, fires):
    e = fresh()
    exits(e, n + 5, stop_outs=n)  # the other exits take profit: only the count of stop-outs decides
    assert bool(fired(e, "stoploss_guard")) == fires


def test_stoploss_guard_pauses_entries_for_1800_s_and_counts_one_hour():
    e = fresh()
    exits(e, 3, stop_outs=3)
    [f] = fired(e, "stoploss_guard")
    assert f.pause_until == NOW + timedelta(seconds=1800)
    assert e.protections.entries_paused_by(NOW + timedelta(seconds=1799)) == "stoploss_guard"
    assert e.protections.entries_paused_by(NOW + timedelta(seconds=1800)) is None
    old = fresh()
    for i, ago in enumerate((3600, 3000, 2000)):  # the first one exactly an hour ago: outside (now - 1 h, now]
        t = NOW - timedelta(seconds=ago)
        old.store.insert("trades", {"symbol": f"S{i}", "kind": "entry", "qty": 1, "entry_ts": t.isoformat(),
                                    "entry_price": 100.0, "exit_ts": t.isoformat(), "exit_price": 98.5, "pnl": -1.5,
                                    "ret": -0.015, "exit_reason": "stop_loss", "mae": -0.015, "mfe": 0.0,
                                    "fees": 0.0})
    old.store.commit()
    assert fired(old, "stoploss_guard") == []


@pytest.mark.parametrize(("stop_outs", "fires"), [(40, True), (39, False)], ids=["40%", "39%"])
def test_signal_quality_stop_out_rate_fires_at_40_percent(stop_outs, fires):
    e = fresh()
    actionable(e, 20, flip=False)  # 20 actionable signals, no flip-flop
    exits(e, 100, stop_outs=stop_outs)
    got = fired(e, "signal_quality")
    assert bool(got) == fires, got


@pytest.mark.parametrize(("n", "fires"), [(4, False), (5, True)])
def test_signal_quality_stop_out_rate_needs_5_exits(n, fires):
    e = fresh()
    actionable(e, 20, flip=False)
    exits(e, n, stop_outs=n)
    assert bool(fired(e, "signal_quality")) == fires


def flip_signals(e, n: int, flips: int) -> None:
    """``n`` actionable signals in the last hour: ``n - flips`` symbols one positive signal each, and the first
    ``flips`` of them a second, negative one 2 minutes later (a flip-flop each)."""
    rows = []
    for i in range(n - flips):
        t = NOW - timedelta(minutes=50) + timedelta(seconds=20 * i)
        rows.append((t, f"S{i}", 0.6))
        if i < flips:
            rows.append((t + timedelta(minutes=2), f"S{i}", -0.6))
    for t, sym, score in rows:
        e.store.insert("signals", {"ts": t.isoformat(), "symbol": sym, "tier": "A", "score": score, "cutoff": 0.28,
                                   "decision": "actionable", "action": "long", "price": 100.0})
    e.store.commit()


@pytest.mark.parametrize(("flips", "fires"), [(25, True), (24, False)], ids=["25%", "24%"])
def test_signal_quality_flip_flop_rate_fires_at_25_percent(flips, fires):
    e = fresh()
    flip_signals(e, 100, flips)
    got = fired(e, "signal_quality")
    assert bool(got) == fires, got
    if got:
        assert got[0].figures["actionable"] == 100 and got[0].figures["flip_flops"] == 25


@pytest.mark.parametrize(("n", "fires"), [(4, False), (5, True)])
def test_signal_quality_needs_5_actionable_signals(n, fires):
    e = fresh()
    flip_signals(e, n, n // 2)  # 40-50 % flip-flops, far above 25 %
    exits(e, 20, stop_outs=20)  # and every exit stopped out: only the count of actionable signals decides
    assert bool(fired(e, "signal_quality")) == fires


def test_signal_quality_cools_off_for_3600_s():
    e = fresh()
    flip_signals(e, 100, 50)
    [f] = fired(e, "signal_quality")
    assert f.until == NOW + timedelta(seconds=3600) and f.pause_until is None
    assert e.protections.cooling_off("signal_quality", NOW + timedelta(seconds=3599))
    assert not e.protections.cooling_off("signal_quality", NOW + timedelta(seconds=3600))

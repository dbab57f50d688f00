"""Protections (rules §10) through Engine.tick with scripted scores, and the KPI helpers on hand-made fixtures."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta

import pytest

from core.clock import UTC, sessions_touched
from core.engine.protect import window_figures
from core.metrics.figures import flip_flops
from core.metrics.figures import max_drawdown as equity_drawdown  # the protections' drawdown, on account equity
from core.rules.protections import RULES
from tests.helpers import DAY, ScriptedStrategy, at, flat_bars, gap_at, make_engine

QUALITY = tuple(r for r in RULES if r.name == "signal_quality")


def test_flip_flops_count_sign_reversals_of_one_symbol_inside_ten_minutes():
    sigs = [("A", 0, 0.5), ("A", 300, -0.5),   # reversal after 5 min: 1
            ("B", 310, 0.5), ("A", 900, 0.6),   # A reverses after 10 min exactly: 2 (window inclusive)
            ("A", 1600, -0.4),                  # 11 min 40 s later: not counted
            ("B", 400, 0.7)]                    # same sign: not counted
    assert flip_flops(sigs) == 2
    assert flip_flops([]) == 0


def test_equity_drawdown_is_peak_to_trough_on_account_equity():
    assert equity_drawdown([100, 120, 90, 130, 117]) == pytest.approx(0.25)  # 120 -> 90
    assert equity_drawdown([100, 101, 102]) == 0.0


def test_sessions_touched_counts_weekends_and_holidays_out():
    thu = datetime(2025, 7, 3, 14, 0, tzinfo=UTC)  # 10:00 New York, an early-close day
    assert sessions_touched(thu, date(2025, 7, 7)) == 1  # Fri 4 July is a holiday, then a weekend
    assert sessions_touched(thu, date(2025, 7, 8)) == 2
    sat = datetime(2025, 7, 5, 14, 0, tzinfo=UTC)
    assert sessions_touched(sat, date(2025, 7, 7)) == 0


def _flip_scores(sym, ts):
    """TSLA alternates +0.6 / -0.6 every 3 minutes from 10:00: each flip is an actionable reversal."""
    if sym != "TSLA" or ts < at(DAY, 10, 0):
        return 0.0
    return 0.6 if ((ts - at(DAY, 10, 0)).total_seconds() // 180) % 2 == 0 else -0.6


def _oracle(engine, now):
    """The rule's numbers recomputed here from the signals table: actionable count and flip-flop rate."""
    rows = engine.store.query("SELECT symbol, ts, score FROM signals WHERE decision='actionable' AND ts > ? "
                              "AND ts <= ? ORDER BY ts, id",
                              ((now - timedelta(hours=1)).isoformat(), now.isoformat()))
    flips, last = 0, {}
    for r in rows:
        t = datetime.fromisoformat(r["ts"]).timestamp()
        p = last.get(r["symbol"])
        if p and t - p[0] <= 600 and (p[1] > 0) != (r["score"] > 0):
            flips += 1
        last[r["symbol"]] = (t, r["score"])
    return len(rows), flips


def test_signal_quality_fires_on_the_tick_its_numbers_are_met_and_does_not_stack():
    e = make_engine(flat_bars([DAY]), ScriptedStrategy(_flip_scores), cutoff_delta=-0.03, mixer_cooldown_s=30,
                    direction_lock_s=30)
    fired_at = None
    t = at(DAY, 9, 45)
    while t <= at(DAY, 12, 0):
        e.tick(t)
        n, flips = _oracle(e, t)
        should = n >= 5 and flips / n >= 0.25
        firings = e.run_protections(t, QUALITY)  # what the KPI snapshot job runs
        if fired_at is None:
            assert bool(firings) == should, (t, n, flips)  # not one signal earlier, not one later
            if firings:
                fired_at = t
                assert firings[0].figures["actionable"] == n and firings[0].figures["flip_flops"] == flips
        elif t < fired_at + timedelta(hours=1):
            assert firings == []  # inside the cool-off: no second firing
        else:
            break
        t += timedelta(seconds=30)
    assert fired_at is not None
    rows = e.store.query("SELECT * FROM protections ORDER BY id")
    # the second firing (after the 1 h cool-off, the flips go on) moves the delta one more step
    assert [r["rule"] for r in rows] == ["signal_quality", "signal_quality"]
    assert json.loads(rows[0]["old_json"]) == {"cutoff_delta": -0.03, "direction_lock_s": 30, "cooldown_s": 30}
    assert json.loads(rows[0]["new_json"]) == {"cutoff_delta": -0.02, "direction_lock_s": 120, "cooldown_s": 150}
    assert json.loads(rows[1]["new_json"]) == {"cutoff_delta": -0.01}
    assert e.params.cutoff_delta == -0.01 and e.params.direction_lock_s == 120 and e.params.cooldown_s == 150
    audit = e.store.query("SELECT who, name, new FROM param_audit WHERE source='protection' ORDER BY id")
    assert {a["who"] for a in audit} == {"protection:signal_quality"} and len(audit) == 4
    assert e.store.scalar("SELECT COUNT(*) FROM notifications WHERE text LIKE 'protection signal_quality fired%'") == 2


def test_a_firing_never_loosens_a_limit():
    e = make_engine(flat_bars([DAY]), ScriptedStrategy(_flip_scores), cutoff_delta=0.02, mixer_cooldown_s=30,
                    direction_lock_s=130)
    t = at(DAY, 10, 0)
    while t <= at(DAY, 11, 0):
        e.tick(t)
        e.run_protections(t, QUALITY)
        t += timedelta(seconds=30)
    row = e.store.one("SELECT * FROM protections")
    assert row is not None
    # a positive delta is already tighter than 0 and a 130 s lock is longer than 120 s: both left alone
    assert json.loads(row["new_json"]) == {"cooldown_s": 150}
    assert e.params.cutoff_delta == 0.02 and e.params.direction_lock_s == 130


def test_stoploss_guard_pauses_entries_and_a_losing_symbol_cools_down():
    crash = at(DAY, 10, 30)

    drop = gap_at("NVDA", crash, 97.0)  # gap below the 98.5 stop

    def score(sym, ts):
        if sym == "NVDA" and (ts < at(DAY, 10, 5) or ts >= at(DAY, 10, 40)):
            return 0.6
        if sym == "AAPL" and ts >= at(DAY, 10, 40):
            return 0.6
        return 0.0

    e = make_engine(flat_bars([DAY], overrides=drop), ScriptedStrategy(score), auto_mode=True,
                    protection_stoploss_count=1, protection_stoploss_pause_s=1800, protection_symbol_cooldown_s=3600)
    t = at(DAY, 10, 0)
    while t <= at(DAY, 11, 25):  # the NVDA loss at 10:30 keeps it out until 11:30
        e.tick(t)
        t += timedelta(seconds=30)
    trade = e.store.one("SELECT * FROM trades")
    assert trade["exit_reason"] == "stop_loss"
    guard = e.store.one("SELECT * FROM protections WHERE rule='stoploss_guard'")
    exit_ts = datetime.fromisoformat(trade["exit_ts"])
    fired = datetime.fromisoformat(guard["fired_at"])
    assert exit_ts <= fired <= exit_ts + timedelta(minutes=1)  # on the tick that ingested the stop fill
    assert datetime.fromisoformat(guard["pause_until"]) == fired + timedelta(seconds=1800)
    # while paused, AAPL's strong signal makes no entry; afterwards it does; NVDA stays cooled down
    paused = e.store.query("SELECT ts FROM signals WHERE symbol='AAPL' AND reason='protection:stoploss_guard'")
    assert paused and all(datetime.fromisoformat(r["ts"]) < fired + timedelta(seconds=1800) for r in paused)
    aapl = e.store.one("SELECT * FROM intents WHERE symbol='AAPL' ORDER BY created_at LIMIT 1")
    assert aapl is not None and datetime.fromisoformat(aapl["created_at"]) >= fired + timedelta(seconds=1800)
    assert e.store.scalar("SELECT COUNT(*) FROM intents WHERE symbol='NVDA' AND kind='entry'") == 1
    assert e.store.scalar("SELECT COUNT(*) FROM signals WHERE symbol='NVDA' AND reason='symbol_cooldown' "
                          "AND ts > ?", (fired.isoformat(),)) > 0


def test_manual_release_ends_the_pause_and_is_audited():
    e = make_engine(flat_bars([DAY]), ScriptedStrategy(lambda s, t: 0.0), protection_stoploss_count=1)
    now = at(DAY, 11, 0)
    e.store.insert("trades", {"symbol": "NVDA", "kind": "entry", "qty": 1, "entry_ts": at(DAY, 10, 0).isoformat(),
                              "entry_price": 100.0, "exit_ts": at(DAY, 10, 59).isoformat(), "exit_price": 98.0,
                              "pnl": -2.0, "ret": -0.02, "exit_reason": "stop_loss", "mae": -0.02, "mfe": 0.0,
                              "fees": 0.0})
    assert [f.rule for f in e.run_protections(now)] == ["stoploss_guard"]
    assert e.protections.entries_paused_by(now + timedelta(minutes=5)) == "stoploss_guard"
    pid = e.store.scalar("SELECT id FROM protections")
    e.store.send_command("release_protection", {"id": pid}, who="trader", now=now)
    e.tick(now + timedelta(minutes=1))
    assert e.protections.entries_paused_by(now + timedelta(minutes=5)) is None
    assert e.store.scalar("SELECT result FROM commands") == "released"
    assert e.store.scalar("SELECT who FROM param_audit WHERE name='protection:stoploss_guard'") == "trader"
    figures = window_figures(e.store, now, 3600)
    assert figures["stop_outs"] == 1 and figures["stop_out_rate"] == 1.0


def test_relaxed_profile_reverts_after_two_sessions_across_a_holiday_and_a_weekend():
    thu, mon, tue = date(2025, 7, 3), date(2025, 7, 7), date(2025, 7, 8)
    e = make_engine(flat_bars([thu, mon, tue]), ScriptedStrategy(lambda s, t: 0.0))
    e.tick(at(thu, 9, 45))
    e.set_params({"profile": "relaxed"}, who="trader", now=at(thu, 10, 0))
    assert e.params.profile == "relaxed" and e.params.cutoff_delta == -0.03
    e.tick(at(thu, 12, 0))  # early close at 13:00
    e.tick(at(mon, 9, 31))  # Fri 4 July holiday, weekend: Monday is only the 2nd session
    assert e.params.profile == "relaxed"
    e.tick(at(tue, 9, 31))
    assert e.params.profile == "default" and e.params.cutoff_delta == 0.0 and e.params.cooldown_s == 180
    rows = e.store.query("SELECT who, source, new FROM param_audit WHERE name='profile' ORDER BY id")
    assert rows[-1] == {"who": "engine", "source": "profile_expiry", "new": json.dumps("default")}
    assert e.store.scalar("SELECT COUNT(*) FROM notifications WHERE text LIKE 'relaxed profile expired%'") == 1


def test_daily_loss_halt_is_recorded_once_and_cannot_be_released_by_hand():
    crash = at(DAY, 10, 30)

    drop = gap_at("NVDA", crash, 90.0)  # a 10 % gap through the 98.5 stop: about 2.7 % of equity lost

    def score(sym, ts):
        if sym == "NVDA" and ts < at(DAY, 10, 5):
            return 0.6
        return 0.6 if sym in ("AAPL", "MSFT") and ts >= at(DAY, 10, 40) else 0.0

    e = make_engine(flat_bars([DAY], overrides=drop), ScriptedStrategy(score), auto_mode=True)
    t = at(DAY, 10, 0)
    while t <= at(DAY, 11, 0):
        e.tick(t)
        t += timedelta(seconds=30)
    halted = e.store.query("SELECT ts, symbol FROM signals WHERE reason='risk_daily_loss' ORDER BY id")
    assert {r["symbol"] for r in halted} == {"AAPL", "MSFT"}
    rows = e.store.query("SELECT * FROM protections WHERE rule='daily_loss'")
    assert len(rows) == 1 and rows[0]["fired_at"] == halted[0]["ts"]  # the first refusal, and only once
    figures = json.loads(rows[0]["figures_json"])
    assert 0.02 <= figures["daily_loss"] < 0.04 and figures["daily_loss_limit"] == 0.02
    assert e.store.scalar("SELECT COUNT(*) FROM notifications WHERE text LIKE 'protection daily_loss fired%'") == 1
    e.store.send_command("release_protection", {"id": rows[0]["id"]}, who="trader", now=t)
    e.tick(t + timedelta(seconds=30))
    assert e.store.scalar("SELECT status FROM commands") == "failed"
    assert e.store.scalar("SELECT released_at FROM protections WHERE id=?", (rows[0]["id"],)) is None
    assert e.store.scalar("SELECT COUNT(*) FROM intents WHERE symbol IN ('AAPL', 'MSFT')") == 0

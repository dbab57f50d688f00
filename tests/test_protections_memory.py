"""The protections and the RTH cap counters live in memory (issue 15): a restart loads the same answers from the
journal, a rolled-back tick takes its uncommitted firing out of memory too, and a tick reads neither table."""

from __future__ import annotations

from datetime import timedelta

from core.rules import gates
from core.rules.protections import RULES
from core.state.protections import Protections
from core.state.store import Store
from tests.helpers import DAY, ScriptedStrategy, at, flat_bars, gap_at, make_engine

GUARD_AND_DRAWDOWN = tuple(r for r in RULES if r.name in ("stoploss_guard", "max_drawdown"))


def _stop_out(e, exit_at):
    e.store.insert("trades", {"symbol": "NVDA", "kind": "entry", "qty": 1, "entry_ts": (exit_at - timedelta(
        minutes=30)).isoformat(), "entry_price": 100.0, "exit_ts": exit_at.isoformat(), "exit_price": 98.0,
        "pnl": -2.0, "ret": -0.02, "exit_reason": "stop_loss", "mae": -0.02, "mfe": 0.0, "fees": 0.0})


def _journal_pause(store, now):
    row = store.one("SELECT rule FROM protections WHERE released_at IS NULL AND pause_until > ? "
                    "ORDER BY pause_until DESC LIMIT 1", (now.isoformat(),))
    return None if row is None else row["rule"]


def _answers(p: Protections, times):
    return [(p.entries_paused_by(t), p.daily_loss_recorded(t), [r["id"] for r in p.active(t)],
             {r.name: (p.cooling_off(r.name, t), p.last_fired(r.name)) for r in RULES}) for t in times]


def test_a_restart_loads_the_same_protections_and_pauses_the_same_entries(tmp_path):
    db = str(tmp_path / "p.db")
    bars = flat_bars([DAY])
    strategy = ScriptedStrategy(lambda s, t: 0.6 if s == "AAPL" else 0.0)
    e = make_engine(bars, strategy, db=db, protection_stoploss_count=1)
    e.tick(at(DAY, 10, 0))
    # a stop-out and an 8 % equity drawdown: the guard pauses entries for 30 min, the drawdown for 2 h (the drawdown
    # over ten snapshots, the rule's minimum sample: tests/test_rule_boundaries_protections.py)
    _stop_out(e, at(DAY, 10, 1))
    for k in range(10):
        equity = 92_000.0 if k == 9 else 100_000.0
        e.store.upsert("equity", {"ts": at(DAY, 10, 1, 30 + 3 * k).isoformat(), "equity": equity, "cash": equity,
                                  "exposure": 0.0})
    fired = e.run_protections(at(DAY, 10, 3), GUARD_AND_DRAWDOWN)
    assert [f.rule for f in fired] == ["stoploss_guard", "max_drawdown"]
    assert e.protections.record_daily_loss_halt(at(DAY, 10, 4), 0.021, 0.02)
    _stop_out(e, at(DAY, 11, 0))  # the guard's cool-off is over: it fires again, pausing until 11:31
    assert [f.rule for f in e.run_protections(at(DAY, 11, 1), GUARD_AND_DRAWDOWN)] == ["stoploss_guard"]
    drawdown = e.store.scalar("SELECT id FROM protections WHERE rule='max_drawdown'")
    e.store.send_command("release_protection", {"id": drawdown}, who="trader", now=at(DAY, 11, 5))
    e.tick(at(DAY, 11, 5))
    assert e.store.scalar("SELECT result FROM commands") == "released"
    times = [at(DAY, 10, 2) + timedelta(minutes=m) for m in range(0, 420, 7)]
    times += [at(DAY, 10, 33), at(DAY, 11, 30), at(DAY, 11, 31), at(DAY, 12, 0), at(DAY, 12, 3), at(DAY, 16, 55)]
    before = _answers(e.protections, times)
    paused = dict(zip(times, (a[0] for a in before), strict=True))
    assert paused[at(DAY, 11, 30)] == "stoploss_guard" and paused[at(DAY, 12, 0)] is None  # drawdown released
    assert paused[at(DAY, 11, 31)] is None and paused[at(DAY, 16, 55)] is None
    assert paused == {t: _journal_pause(e.store, t) for t in times}  # the answers the table gives
    assert e.protections.rows == {r["id"]: r for r in e.store.query("SELECT * FROM protections")}
    e.store.close()

    again = make_engine(bars, strategy, db=db, protection_stoploss_count=1)
    assert _answers(again.protections, times) == before
    again.tick(at(DAY, 11, 6))  # AAPL's strong signal: held back by the second guard's pause
    assert again.store.scalar("SELECT reason FROM signals WHERE symbol='AAPL' AND ts=?",
                              (at(DAY, 11, 6).isoformat(),)) == "protection:stoploss_guard"
    # the day's loss halt is recorded once, also across the restart
    assert again.protections.record_daily_loss_halt(at(DAY, 12, 0), 0.03, 0.02) is False
    assert again.store.scalar("SELECT COUNT(*) FROM protections WHERE rule='daily_loss'") == 1


def test_a_rolled_back_tick_takes_its_firing_out_of_memory():
    crash = at(DAY, 10, 30)

    drop = gap_at("NVDA", crash, 97.0)  # gap below the 98.5 stop

    def score(sym, ts):
        return 0.6 if sym == "NVDA" and ts < at(DAY, 10, 5) else 0.0

    e = make_engine(flat_bars([DAY], overrides=drop), ScriptedStrategy(score), auto_mode=True,
                    protection_stoploss_count=1)
    # the database refuses the firing's notification: the row went in (and into memory), the tick rolls back
    e.store.execute("CREATE TRIGGER refuse BEFORE INSERT ON notifications WHEN NEW.text LIKE 'protection %' "
                    "BEGIN SELECT RAISE(ABORT, 'refused'); END")
    t, failed = at(DAY, 10, 0), []
    while t <= at(DAY, 10, 40):
        rep = e.tick(t)
        if rep.storage_error:
            failed.append(t)
            assert e.store.scalar("SELECT COUNT(*) FROM protections") == 0
            assert e.protections.rows == {} and e.protections.entries_paused_by(t) is None
            assert not e.protections.cooling_off("stoploss_guard", t)
        t += timedelta(seconds=30)
    assert failed and failed[0] >= crash  # the tick that took the stop-out in was refused
    # a tick is one transaction: the refused tick kept nothing, its fill included (the broker still has it)
    assert e.store.scalar("SELECT COUNT(*) FROM trades") == 0
    e.store.execute("DROP TRIGGER refuse")
    assert not e.tick(t).storage_error  # the next tick takes the fill in once, and the guard fires with it
    assert e.store.scalar("SELECT COUNT(*) FROM trades") == 1
    assert e.protections.entries_paused_by(t) == "stoploss_guard"
    assert e.protections.rows == {r["id"]: r for r in e.store.query("SELECT * FROM protections")}


def test_a_rolled_back_tick_takes_its_counts_out_of_memory():
    e = make_engine(flat_bars([DAY]), ScriptedStrategy(lambda s, t: -0.6 if s == "TSLA" else 0.0),
                    mixer_cooldown_s=0, direction_lock_s=0)
    e.tick(at(DAY, 10, 0))
    key = f"rth:{DAY.isoformat()}:TSLA"
    assert e.cap_counters.view()[key] == e.store.counter(key) == 1
    e.store.execute("CREATE TRIGGER refuse BEFORE INSERT ON equity BEGIN SELECT RAISE(ABORT, 'refused'); END")
    assert e.tick(at(DAY, 10, 1)).storage_error  # TSLA counted, then the equity snapshot was refused
    assert e.cap_counters.view()[key] == e.store.counter(key) == 1


def test_a_quiet_tick_reads_neither_the_protections_nor_the_counters():
    def score(sym, ts):
        return {"AAPL": 0.6, "TSLA": -0.6}.get(sym, 0.0)  # AAPL: an entry to pause; TSLA: evidence the cap counts

    e = make_engine(flat_bars([DAY]), ScriptedStrategy(score), protection_stoploss_count=1, mixer_cooldown_s=0,
                    direction_lock_s=0)
    e.tick(at(DAY, 10, 0))
    _stop_out(e, at(DAY, 10, 0, 10))
    assert [f.rule for f in e.run_protections(at(DAY, 10, 0, 20))] == ["stoploss_guard"]
    sql: list[str] = []
    e.store.conn.set_trace_callback(sql.append)
    try:
        reports = [e.tick(at(DAY, 10, 0, 30) + timedelta(seconds=30 * k)) for k in range(4)]
    finally:
        e.store.conn.set_trace_callback(None)
    assert all(r.fills == 0 and r.storage_error is None for r in reports)
    assert sum(r.suppressed.get("protection:stoploss_guard", 0) for r in reports) == 4  # the pause was asked
    assert sum(r.actionable for r in reports) == 4  # and the cap, for TSLA
    assert sql and not [q for q in sql if "FROM PROTECTIONS" in q.upper() or "FROM COUNTERS" in q.upper()]
    assert e.store.counter(f"rth:{DAY.isoformat()}:TSLA") == 5
    counts = e.cap_counters.day_counts(DAY.isoformat(), "TSLA")
    assert gates.check_rth_daily_cap(*counts, e.s.tier_a_daily_cap, e.s.rth_daily_cap) == gates.OK


def test_memory_follows_a_rollback_outside_the_tick():
    """A rollback the engine did not see (a failed job's) leaves the memory stale until the next look-up."""
    st = Store(":memory:")
    p = Protections(st)
    assert p.record_daily_loss_halt(at(DAY, 10, 0), 0.03, 0.02)
    assert p.daily_loss_recorded(at(DAY, 11, 0))
    st.rollback()
    assert not p.daily_loss_recorded(at(DAY, 11, 0)) and p.rows == {}
    assert p.record_daily_loss_halt(at(DAY, 11, 0), 0.03, 0.02)


def test_the_window_figures_from_memory_are_the_journals():
    """``Protections.windows`` (kept as the engine writes) gives every figure the SQLite queries give, at any time
    and window of a replay with fills, stop-outs, token overflow and a drawdown; and a window reaching past what it
    holds reads the older rows back."""
    from datetime import date, datetime

    from core.config import load_settings
    from core.engine.protect import window_figures
    from core.research.replay import run_replay

    s = load_settings(auto_mode=True, sim_fee_per_order=1.25, tier_a_tokens=2, reserve_tokens=1,
                      stop_loss_pct=0.004, take_profit_pct=0.006, cutoff_delta=-0.05)
    res = run_replay(s, days=2, seed=5, start=date(2025, 3, 4))
    e = res.engine
    windows = e.protections.windows
    first = e.store.scalar("SELECT MIN(ts) FROM equity")
    last = e.store.scalar("SELECT MAX(ts) FROM equity")
    t0, t1 = datetime.fromisoformat(first), datetime.fromisoformat(last)
    assert e.store.scalar("SELECT COUNT(*) FROM trades WHERE exit_reason='stop_loss'") > 0
    checked, nonzero = 0, set()
    t = t1
    while t >= t0:  # backwards: each earlier window reaches past what memory holds
        for window in (3600, 7200, 86_400):
            for after in (None, t - timedelta(seconds=window // 3)):
                got = window_figures(e.store, t, window, after, None, windows)
                want = window_figures(e.store, t, window, after)
                assert got == want, (t, window, after)
                checked += 1
                nonzero |= {k for k, v in got.items() if v}
        t -= timedelta(minutes=37)
    assert checked > 100
    assert {"actionable", "flip_flops", "stop_outs", "tier_a_overflow_max", "equity_drawdown"} <= nonzero
    e.store.rollback()  # emptied, read again when next asked
    assert windows.equity.loaded_from is None
    assert window_figures(e.store, t1, 86_400, None, None, windows) == window_figures(e.store, t1, 86_400)
    res.store.close()

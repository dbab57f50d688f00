"""The paper-evaluation report: per-session KPIs against the thresholds, and the plain verdict."""

from __future__ import annotations

import json
from datetime import date, datetime

from core.config import load_settings
from core.research.evaluation import READY_DEFAULT, READY_LIVE, paper_evaluation, profile_timeline, session_profile
from core.state.protections import Protections
from core.state.store import Store
from tests.helpers import at

MON, TUE, WED, THU, FRI = (date(2025, 3, d) for d in range(3, 8))
NEXT_MON = date(2025, 3, 10)
S = load_settings()


def session(st: Store, day: date, *, actionable: int = 6, trades: int = 2, stop_outs: int = 0,
            flips: bool = False, equity_dip: float = 0.0) -> None:
    """One session's rows: actionable signals 5 min apart (alternating sign when ``flips``), closed trades,
    equity snapshots with an optional dip."""
    for k in range(actionable):
        score = -0.6 if flips and k % 2 else 0.6
        st.insert("signals", {"ts": at(day, 10, 5 * k).isoformat(), "symbol": "AAPL", "tier": "A", "score": score,
                              "cutoff": 0.35, "decision": "actionable", "price": 100.0})
    for k in range(trades):
        st.insert("trades", {"symbol": "MSFT", "kind": "entry", "qty": 1, "entry_ts": at(day, 11, 0).isoformat(),
                             "exit_ts": at(day, 12, k).isoformat(), "entry_price": 100, "exit_price": 101,
                             "pnl": -1.0 if k < stop_outs else 1.0, "ret": 0.01, "mae": 0, "mfe": 0, "fees": 0,
                             "exit_reason": "stop_loss" if k < stop_outs else "take_profit"})
    for hh, eq in ((10, 100_000.0), (12, 100_000.0 * (1 - equity_dip)), (15, 100_000.0)):
        st.insert("equity", {"ts": at(day, hh, 0).isoformat(), "equity": eq, "cash": eq, "exposure": 0.0})


def switch(st: Store, when: datetime, old: str, new: str) -> None:
    st.insert("param_audit", {"ts": when.isoformat(), "who": "trader", "name": "profile", "old": json.dumps(old),
                              "new": json.dumps(new), "source": "command"})


def after(day: date) -> datetime:
    return at(day, 17, 0)


def test_no_sessions_yet_says_so():
    st = Store(":memory:")
    assert paper_evaluation(st, S, after(MON)).verdict == "not yet, because no paper session has been completed yet"
    session(st, MON)
    rep = paper_evaluation(st, S, at(MON, 13, 0))  # mid-session
    assert rep.verdict == ("not yet, because no paper session has been completed yet "
                           "(2025-03-03 (default) is in progress)")
    assert [s.status for s in rep.sessions] == ["in progress"]


def test_two_relaxed_sessions_then_the_default_profile_then_live():
    st = Store(":memory:")
    switch(st, at(MON, 9, 0), "default", "relaxed")
    session(st, MON)
    rep = paper_evaluation(st, S, after(MON))
    assert rep.verdict.startswith("not yet, because 1 of 2 relaxed-profile sessions passed")
    session(st, TUE)
    switch(st, at(WED, 9, 0), "relaxed", "default")  # the relaxed profile expired before Wednesday's open
    assert paper_evaluation(st, S, after(TUE)).verdict == READY_DEFAULT
    session(st, WED)
    # all three sessions passed: early cut-over at 3 sessions (EVAL_EARLY_CUTOVER_SESSIONS)
    rep = paper_evaluation(st, S, after(WED))
    assert rep.verdict == READY_LIVE and rep.detail.startswith("early cut-over: all 3 sessions passed")
    strict = load_settings(eval_early_cutover_sessions=5)
    rep = paper_evaluation(st, strict, after(WED))
    assert rep.verdict == READY_DEFAULT and "1 so far" in rep.detail
    session(st, THU)
    session(st, FRI)
    rep = paper_evaluation(st, strict, after(FRI))
    assert rep.verdict == READY_LIVE and rep.detail == "3 default-profile sessions in a row passed"
    assert [(r["session"], r["profile"], r["status"]) for r in rep.rows()] == [
        ("2025-03-03", "relaxed", "passed"), ("2025-03-04", "relaxed", "passed"), ("2025-03-05", "default", "passed"),
        ("2025-03-06", "default", "passed"), ("2025-03-07", "default", "passed")]


def test_each_threshold_fails_a_session_with_its_reason():
    st = Store(":memory:")
    switch(st, at(MON, 9, 0), "default", "relaxed")
    session(st, MON, trades=4, stop_outs=2)  # stop-out 50 %
    session(st, TUE, flips=True)  # 5 of 6 actionable signals reverse within 5 min
    session(st, WED, actionable=3)
    session(st, THU, equity_dip=0.025)
    session(st, FRI)
    Protections(st).record_daily_loss_halt(at(FRI, 14, 0), 0.021, 0.02)
    rep = paper_evaluation(st, S, after(FRI))
    why = {s.day: s.failures for s in rep.sessions}
    assert why[MON] == ("stop-out rate 50% (>= 40%)",)
    assert why[TUE] == ("flip-flop rate 83% (>= 25%)",)
    assert why[WED] == ("only 3 actionable signals (< 5)",)
    assert why[THU] == ("equity drawdown 2.50% (>= 2.00%)",)
    assert why[FRI] == ("the daily loss limit halted new entries",)
    assert rep.verdict == ("not yet, because 0 of 2 relaxed-profile sessions passed in a row; 2025-03-06 (relaxed) "
                           "failed: equity drawdown 2.50% (>= 2.00%); 2025-03-07 (relaxed) failed: the daily loss "
                           "limit halted new entries")


def test_a_failed_default_session_restarts_the_count_and_is_named():
    st = Store(":memory:")
    cfg = load_settings(eval_relaxed_sessions=0, eval_early_cutover_sessions=10)
    session(st, MON)
    session(st, TUE, trades=5, stop_outs=3)
    session(st, WED)
    rep = paper_evaluation(st, cfg, after(WED))
    assert rep.verdict == READY_DEFAULT
    assert rep.detail.endswith("1 so far; 2025-03-04 (default) failed: stop-out rate 60% (>= 40%)")
    session(st, THU)
    # the weekend and a day the engine did not run are not sessions; Monday completes three in a row
    session(st, NEXT_MON)
    assert [s.day for s in paper_evaluation(st, cfg, after(NEXT_MON)).sessions] == [MON, TUE, WED, THU, NEXT_MON]
    assert paper_evaluation(st, cfg, after(NEXT_MON)).verdict == READY_LIVE


def test_a_sessions_profile_is_the_one_on_for_most_of_its_hours():
    st = Store(":memory:")
    switch(st, at(MON, 14, 0), "default", "relaxed")  # 4.5 h default, 2 h relaxed
    switch(st, at(TUE, 10, 0), "relaxed", "default")  # Tuesday: relaxed 9:30-10:00, default 10:00-11:00,
    switch(st, at(TUE, 11, 0), "default", "relaxed")  # relaxed again from 11:00: 5.5 h relaxed against 1 h
    tl = profile_timeline(st)
    assert session_profile(tl, at(MON, 9, 30), at(MON, 16, 0)) == "default"
    assert session_profile(tl, at(TUE, 9, 30), at(TUE, 16, 0)) == "relaxed"
    assert session_profile(tl, at(WED, 9, 30), at(WED, 16, 0)) == "relaxed"
    assert tl[0] == ("", "default") and datetime.fromisoformat(tl[1][0]) == at(MON, 14, 0)

"""Issue 28: a live session replayed from its journal matches live, and every difference gets its cause.

The live sessions run through the real Runtime on the synthetic market and simulated broker
(tests/session_live.py), with a clock the test moves: fixed dates and seeds, no waiting on wall time."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from core.research import session_replay as sr
from core.research.__main__ import main
from core.state.store import Store
from tests.session_live import DAY, LiveSession, full_session, ny

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_full_live_session_replays_exactly(tmp_path, seed):
    db = str(tmp_path / "live.db")
    done = full_session(db, seed)
    live = Store(db)
    try:
        # the session did what the test says it did: an approval, a rejection, auto mode, two changes, a close
        assert done["approved"] and done["rejected"]
        audit = {(r["name"], r["source"]) for r in live.query("SELECT name, source FROM param_audit")}
        assert {("auto_mode", "command"), ("cutoff_delta", "slider"), ("cooldown_s", "command")} <= audit
        statuses = {r["id"]: r["status"] for r in live.query("SELECT id, status FROM intents")}
        assert statuses[done["rejected"]] == "rejected" and statuses[done["approved"]] == "submitted"
        assert live.scalar("SELECT COUNT(*) FROM fills") > 0
        assert done["closed"] and live.scalar("SELECT COUNT(*) FROM intents WHERE kind='exit' AND source='trader' "
                                              "AND symbol=?", (done["closed"],)) == 1
        result = sr.replay_session(live, DAY)
    finally:
        live.close()
    assert result.live_version == result.replay_version
    assert result.differences == [], result.table().head(10).to_string()
    assert result.matched["decisions"] > 1000 and result.matched["fills"] > 0 and result.matched["equity"] > 300
    assert result.summary["pnl_difference"] == 0.0
    assert result.gap_ticks == 0


def test_the_cli_and_a_changed_live_row(tmp_path, capsys):
    """The comparison can fail: a live row the replay cannot make (an edited fill price) is found and labelled."""
    db = str(tmp_path / "live.db")
    full_session(db, 1)
    # first the command line on the untouched session: no difference, kept in research_runs
    assert main(["--replay-session", DAY.isoformat(), "--db", db, "--save", "cli replay"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["summary"]["differences"] == 0 and out["saved_run_id"] >= 1
    assert main(["--replay-session", "2025-03-06", "--db", db]) == 2
    assert "no live session journalled on 2025-03-06" in capsys.readouterr().err
    live = Store(db)
    try:
        assert live.scalar("SELECT kind FROM research_runs WHERE id=?", (out["saved_run_id"],)) == "session_replay"
        fill = live.one("SELECT id, price FROM fills WHERE ts >= ? ORDER BY ts LIMIT 1", (ny(DAY, 9, 30).isoformat(),))
        live.execute("UPDATE fills SET price = price + 0.5 WHERE id=?", (fill["id"],))
        live.commit()
        result = sr.replay_session(live, DAY)
    finally:
        live.close()
    first = result.first_divergence
    assert first is not None and first.table == "fills" and first.cause == sr.FILL_PRICE
    assert list(first.fields) == ["price"]
    assert result.summary["by_cause"].get(sr.UNEXPLAINED, 0) == 0


def _driver(db: str, *args: str) -> int:
    proc = subprocess.run([sys.executable, "-m", "tests.session_live", db, *args], cwd=ROOT, timeout=300,
                          capture_output=True, text=True)
    return proc.returncode


def test_a_kill_9_mid_session_is_labelled_restart_and_the_rest_matches(tmp_path):
    db = str(tmp_path / "live.db")
    assert _driver(db, "2", "09:31", "16:00", "11:00") == -signal.SIGKILL  # killed right after the 11:00 tick
    assert _driver(db, "2", "11:20", "16:00") == 0  # started again 20 minutes later, to the close
    live = Store(db)
    try:
        assert live.scalar("SELECT COUNT(*) FROM engine_calls WHERE info LIKE '%restart%'") == 2  # both starts
        result = sr.replay_session(live, DAY)
    finally:
        live.close()
    assert [(g["start"][11:16], g["end"][11:16], g["cause"]) for g in result.gaps] == [("16:00", "16:20", "restart")]
    assert result.gap_ticks > 30
    assert result.differences, "the replay ticked through the gap: it must have decided what live could not"
    causes = {d.cause for d in result.differences}
    assert causes == {sr.RESTART}, result.table().head(10).to_string()
    # everything differing is what the replay did while live was down; before and after the gap all matches (after
    # it, the replay carries on from the state live journalled at its restart)
    assert all("2025-03-05T16:00:30" <= d.ts < "2025-03-05T16:20" for d in result.differences)
    assert all(d.kind == "only_replay" for d in result.differences)
    assert result.matched["decisions"] > 3000 and result.matched["equity"] > 300
    assert set(result.summary["pnl_difference_by_cause"]) <= {sr.RESTART}


def test_a_session_traded_by_older_rules_is_labelled_rule_change(tmp_path, monkeypatch):
    """Live traded with a stricter cutoff rule under another code version: every difference says so."""
    from core.engine import journal
    from core.rules import gates

    db = str(tmp_path / "live.db")
    real_check = gates.check_cutoff
    with monkeypatch.context() as m:
        m.setattr(journal, "code_version", lambda: "older-rules0")
        m.setattr(gates, "check_cutoff", lambda score, cutoff: real_check(score, cutoff + 0.04))
        s = LiveSession(db, seed=3, cutoff_delta=-0.05, auto_mode=True)
        try:
            s.tick_until(12, 0)
        finally:
            s.stop()
    live = Store(db)
    try:
        result = sr.replay_session(live, DAY)
    finally:
        live.close()
    assert result.live_version == "older-rules0" and result.replay_version == journal.code_version()
    assert result.differences, "a looser cutoff now: the replay acts where live did not"
    assert {d.cause for d in result.differences} == {sr.RULE_CHANGE}
    first = result.first_divergence
    assert first is not None and first.table == "decisions" and first.kind == "different"


def test_the_trade_history_page_replays_a_session_and_names_each_cause(tmp_path, monkeypatch):
    """The page's "Replay this session" under AppTest: the summary, the first divergence, the table of causes (with
    what each means) and the differences, New York time first; the run is saved in research_runs."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from core.runtime import stop_all

    db = str(tmp_path / "live.db")
    full_session(db, 1)
    live = Store(db)
    try:  # one live fill moved half a dollar: a fill_price difference, and the trade and equity that follow
        fill = live.one("SELECT id FROM fills WHERE ts >= ? ORDER BY ts LIMIT 1", (ny(DAY, 9, 30).isoformat(),))
        live.execute("UPDATE fills SET price = price + 0.5 WHERE id=?", (fill["id"],))
        live.commit()
    finally:
        live.close()
    for k, v in {"DB_PATH": db, "ENGINE_JOBS": "0", "RESEARCH_WARM_UP": "0"}.items():
        monkeypatch.setenv(k, v)
    st.cache_resource.clear()
    stop_all()
    try:
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
        at.run()
        at.switch_page("pages/history.py").run()
        assert at.selectbox(key="session_replay_day").value == DAY.isoformat()
        at.button(key="session_replay_run").click().run()
        assert not at.exception, at.exception
        first = [w.value for w in at.warning if w.value.startswith("First divergence at")]
        assert len(first) == 1 and "(New York): fills" in first[0] and "cause fill_price" in first[0]
        frames = {tuple(df.value.columns)[:2]: df.value for df in at.dataframe}
        causes = frames[("cause", "differences")]
        assert causes["cause"].tolist() == ["fill_price"] and causes["differences"].iloc[0] >= 1
        assert causes["meaning"].iloc[0] == sr.CAUSE_WORDS[sr.FILL_PRICE]
        table = frames[("time (NY)", "cause")]
        assert set(table["cause"]) == {"fill_price"} and table["time (NY)"].iloc[0] >= "09:30:00"
        assert at.multiselect(key="session_replay_causes").value == ["fill_price"]
    finally:
        st.cache_resource.clear()
        stop_all()
    live = Store(db, readonly=True)
    try:
        assert live.scalar("SELECT COUNT(*) FROM research_runs WHERE kind='session_replay'") == 1
    finally:
        live.close()


# ---------------------------------------------------------------- each cause's own rule, on both sides of it


def _calls(*seconds: float, restart_at: float | None = None) -> list[dict]:
    base = ny(DAY, 10, 0)
    return [{"kind": "tick", "ts": (base + timedelta(seconds=s)).isoformat(), "wall": None,
             "info": json.dumps({"restart": True}) if s == restart_at else ""} for s in seconds]


def test_a_stretch_without_ticks_is_timing_from_three_cadences_and_a_minute_on():
    steady = [30.0 * i for i in range(10)]  # a 30 s cadence
    _, gaps = sr.tick_schedule(_calls(*steady, 270 + 90, 270 + 90 + 30))  # 90 s: three cadences, not more
    assert gaps == []
    _, gaps = sr.tick_schedule(_calls(*steady, 270 + 91, 270 + 91 + 30))  # 91 s: live skipped ticks
    assert [(g["cause"], g["restart"]) for g in gaps] == [(sr.TIMING, False)]
    _, gaps = sr.tick_schedule(_calls(*steady, 270 + 180, restart_at=270 + 180))
    assert [g["cause"] for g in gaps] == [sr.RESTART]


def _evidence(tmp_path, orders: list[dict], fills: list[dict] | None = None) -> sr._Evidence:
    live = Store(str(tmp_path / "ev.db"))
    for o in orders:
        live.upsert("orders", {"intent_id": "i1", "symbol": "NVDA", "side": "buy", "type": "market", **o})
    live.commit()
    return sr._Evidence(live, [], [], None, None, live_fills=fills or [])


def _order_diff(fields: dict, cid: str = "o1") -> sr.Difference:
    row = {"client_order_id": cid, "symbol": "NVDA"}
    return sr.Difference("orders", cid, "different", ny(DAY, 10, 5).isoformat(), "NVDA", fields, live_row=row,
                         replay_row=row)


def test_a_partly_filled_live_order_is_the_broker(tmp_path):
    one_fill = [{"client_order_id": "o1", "ts": ny(DAY, 10, 1).isoformat(), "qty": 50.0, "price": 10.0}]
    ev = _evidence(tmp_path, [{"client_order_id": "o1", "qty": 100.0, "filled_qty": 50.0, "status": "canceled"}],
                   one_fill)
    assert sr._direct_cause(_order_diff({"filled_qty": [50.0, 100.0]}), ev)[0] == sr.BROKER
    ev = _evidence(tmp_path, [{"client_order_id": "o1", "qty": 100.0, "filled_qty": 100.0, "status": "filled"}],
                   one_fill)
    assert sr._direct_cause(_order_diff({"filled_qty": [100.0, 90.0]}), ev)[0] is None  # filled whole: not broker


def test_a_fill_on_a_bar_live_saw_otherwise_is_data(tmp_path):
    ev = _evidence(tmp_path, [{"client_order_id": "o1", "qty": 10.0, "filled_qty": 10.0, "status": "filled"}])
    at = ny(DAY, 10, 3)
    fill = {"client_order_id": "o1", "symbol": "NVDA", "ts": at.isoformat()}
    d = sr.Difference("fills", "f1", "different", at.isoformat(), "NVDA", {"price": [10.0, 10.2]}, live_row=fill,
                      replay_row=fill)
    ev.changed = {"NVDA": {int(at.timestamp())}}
    assert sr._direct_cause(d, ev)[0] == sr.DATA
    ev.changed = {"NVDA": {int(at.timestamp()) + 60}}  # another bar changed: the fill model's own price
    assert sr._direct_cause(d, ev)[0] == sr.FILL_PRICE
    # a difference in more than the price (the quantity) is not the fill model's
    d.fields = {"price": [10.0, 10.2], "qty": [10.0, 9.0]}
    assert sr._direct_cause(d, ev)[0] is None

"""Issue 28: a live session replayed from its journal matches live, and every difference gets its cause.

The live sessions run through the real Runtime on the synthetic market and simulated broker
(tests/session_live.py), with a clock the test moves: fixed dates and seeds, no waiting on wall time."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.research import session_replay as sr
from core.state.store import Store
from tests.session_live import DAY, full_session, ny

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


def test_the_replay_sees_a_changed_replay_state(tmp_path):
    """The comparison can fail: a live row the replay cannot make (an edited fill price) is found and labelled."""
    db = str(tmp_path / "live.db")
    full_session(db, 1)
    live = Store(db)
    try:
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

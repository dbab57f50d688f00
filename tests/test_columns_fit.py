"""Issue 27 item 7: table columns whole at 1280 px. Approvals' Recent decisions ("status", "your click") and the
Live signals decision stream ("reason") under AppTest, on a database filled with fixed rows.

The browser sizes a column without a configured width once, from the rows of its first render, and keeps it while
a fragment refreshes the rows: a column must carry a width in pixels that holds the text it shows (the font model
of ``ui.tables``, measured on docs/screens at 1280x800) and end inside the 820 px main block of a 1280 px window.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from core.runtime import stop_all
from core.state.store import Store
from ui.tables import MAIN_PX_1280, text_px

APP = str(Path(__file__).resolve().parents[1] / "app.py")
NAMED = {"small": 75, "medium": 200, "large": 400}  # Streamlit's width presets, in pixels
REFUSED = "approve: refused: risk_max_positions (2 pending approvals)"


@pytest.fixture
def filled(tmp_path, monkeypatch):
    db = tmp_path / "fit.db"
    store = Store(db)
    for i, (status, note) in enumerate([("submitted", None), ("rejected", "rejected by ui:1a2b3c4d"),
                                        ("expired", None), ("failed", "broker: insufficient buying power")]):
        store.insert("intents", {
            "id": f"entry-NVDA-buy-20250310T1{i}1700", "created_at": f"2025-03-10T14:1{i}:00+00:00", "symbol": "NVDA",
            "side": "buy", "qty": 149.0, "price": 120.0, "notional": 17_880.0, "kind": "entry", "reason": "signal",
            "source": "engine", "status": status, "expires_at": f"2025-03-10T14:2{i}:00+00:00",
            "decided_at": f"2025-03-10T14:1{i}:30+00:00", "decided_by": "ui:1a2b3c4d", "note": note})
    for i, (decision, reason) in enumerate([("suppressed", "below_cutoff"), ("actionable", None),
                                            ("suppressed", "risk_max_positions (2 pending approvals)"),
                                            ("suppressed", "protection:signal_quality")]):
        store.insert("signals", {"ts": f"2025-03-10T15:0{i}:00+00:00", "bar_ts": f"2025-03-10T14:5{i}:00+00:00",
                                 "symbol": "NVDA", "tier": "A", "score": 0.31, "raw_score": 0.31, "vol_spike": 0.1,
                                 "cutoff": 0.28, "decision": decision, "reason": reason,
                                 "action": "buy" if decision == "actionable" else None, "price": 120.0})
    store.commit()
    store.close()
    monkeypatch.setenv("DB_PATH", str(db))
    monkeypatch.setenv("ENGINE_JOBS", "0")
    monkeypatch.setenv("SIM_START", "2025-03-10")
    st.cache_resource.clear()
    stop_all()
    yield db
    st.cache_resource.clear()
    stop_all()


def spans(table, upto: str) -> dict[str, tuple[int, int, int]]:  # type: ignore[no-untyped-def]
    """column -> (left px, right px, px its longest text needs), in the order shown, up to the column ``upto`` (the
    columns after it may be scrolled to)."""
    config = json.loads(table.proto.columns or "{}")
    frame = table.value
    out, left = {}, 0
    for col in frame.columns:
        need = max(text_px(col), *(text_px(v) for v in frame[col].astype(str)))
        width = (config.get(col) or {}).get("width")
        width = NAMED.get(width, width)
        assert isinstance(width, int), f"{col!r} has no width: the browser sizes it at its first render only"
        out[col] = (left, left + width, need)
        left += width
        if col == upto:
            break
    return out


def assert_whole(table, columns: list[str]) -> None:  # type: ignore[no-untyped-def]
    got = spans(table, columns[-1])
    for col in columns:
        left, right, need = got[col]
        assert right - left >= need, (col, right - left, need)  # the text is not cut inside its cell
        assert right <= MAIN_PX_1280, (col, right)  # and the column is on screen at 1280 px, no scrolling


def test_recent_decisions_show_status_and_your_click_whole_at_1280(filled):
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["_my_decisions"] = {"entry-NVDA-buy-20250310T111700": REFUSED}
    at.run()
    at.switch_page("pages/approvals.py").run()
    assert not at.exception, at.exception
    table = next(d for d in at.dataframe if "your click" in d.value.columns)
    assert REFUSED in set(table.value["your click"])
    assert_whole(table, ["when", "symbol", "side", "qty", "status", "your click"])
    # a status that may come later (the browser keeps the first width) fits too
    left, right, _ = spans(table, "status")["status"]
    assert right - left >= text_px("submitting")


def test_the_decision_stream_shows_its_reason_whole_at_1280(filled):
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    table = next(d for d in at.dataframe if "reason" in d.value.columns and "decision" in d.value.columns
                 and "vol_spike" not in d.value.columns)
    assert "risk_max_positions (2 pending approvals)" in set(table.value["reason"])
    assert_whole(table, ["ts", "symbol", "tier", "score", "cutoff", "decision", "reason"])
    left, right, _ = spans(table, "reason")["reason"]
    assert right - left >= text_px("risk_max_positions (12 pending approvals)")  # longer ones that may come later

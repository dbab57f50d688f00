"""The Research page's search (AppTest): it runs, is saved, shows its verdict and plots, and "Apply to live" of
its chosen setting asks first, showing the PBO and the deflated Sharpe, then sends the audited command."""

from __future__ import annotations

import json
import os
from datetime import date

from core.state.store import Store
from tests.test_research_page import app, chart, set_range, texts  # noqa: F401 - app is a fixture

FIRST, LAST = date(2025, 3, 3), date(2025, 3, 6)  # 4 sessions: PBO over 4 blocks, no deflated Sharpe


def test_a_search_on_the_page_is_saved_with_its_verdict_and_applies_to_live(app):  # noqa: F811
    at = app
    set_range(at, FIRST, LAST)
    at.text_area(key="q_space").set_value("cutoff_delta=-0.08:0.08\nmixer_cooldown_s=60:600")
    at.number_input(key="q_trials").set_value(4)
    at.selectbox(key="q_workers").set_value(1)
    at.checkbox(key="q_prune").set_value(False)
    next(b for b in at.get("form_submit_button") if b.proto.label == "Run search").click().run()
    assert not at.exception, at.exception
    verdicts = [t for kind in ("error", "warning", "success") for t in texts(at, kind) if t.startswith("PBO ")]
    assert len(verdicts) == 1, texts(at, "warning") + texts(at, "error")
    assert any("no deflated Sharpe: the deflated Sharpe ratio needs ≥ 20 sessions" in c for c in texts(at, "caption"))
    history = chart(at, "over trials")
    assert sum(1 for x in history["data"][0]["x"] if x is not None) == 4
    chart(at, "Parameter importance")
    chart(at, "total_return by cutoff_delta")  # a slice per parameter
    chart(at, "total_return by mixer_cooldown_s")
    chart(at, "Out-of-sample rank")  # the logit histogram
    at.run()  # the saved list (section 5) is drawn above the search: it shows the new run on the next run
    saved = next(d.value for d in at.dataframe if "created_at" in d.value.columns)
    assert list(saved["kind"]) == ["search"]
    # apply to live: a confirmation first, with the odds
    next(b for b in at.button if b.proto.label.startswith("Apply the chosen setting")).click().run()
    ask = next(t for t in texts(at, "warning") if t.startswith("Apply search #"))
    assert "PBO " in ask and "deflated Sharpe n/a" in ask and "cutoff_delta" in ask and "cooldown_s" in ask
    next(b for b in at.button if b.proto.label == "Confirm" and "apply_yes" in (b.key or "")).click().run()
    assert not at.exception, at.exception
    done = [t for t in texts(at, "success") if "applied to live" in t]
    assert done and "PBO " in done[0], texts(at, "success")
    best = at.session_state["q_result"]["best"]["params"]
    store = Store(os.environ["DB_PATH"], readonly=True)
    try:
        audit = store.query("SELECT name, new, source FROM param_audit WHERE name IN ('cutoff_delta', 'cooldown_s')")
    finally:
        store.close()
    got = {r["name"]: json.loads(r["new"]) for r in audit if r["source"] == "research"}
    assert got == {"cutoff_delta": round(best["cutoff_delta"], 4), "cooldown_s": best["mixer_cooldown_s"]}

"""The outside services wired into the runtime: EDGAR filings -> events -> the LLM gate -> the mixer, and the
notifications forwarded to a Slack webhook; every server is a real HTTP server on 127.0.0.1."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from core.clock import UTC, SimClock, session_bounds
from core.config import load_settings
from core.runtime import Runtime
from core.services.llm import blend
from tests.fakes.edgar_server import FakeEdgar
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.webhook import Webhook

DAY = date(2025, 3, 11)  # the fixtures hold NVDA's 8-K of 10 March (AMD's of 6 March is more than a day old)
OPEN = session_bounds(DAY)[0].astimezone(UTC)


@pytest.fixture
def services(tmp_path):
    edgar, hook = FakeEdgar(), Webhook()
    with FakeOpenAI(default=("json", {"sentiment": -0.9, "confidence": 1.0, "rationale": "guidance cut"})) as llm:
        s = load_settings(db_path=str(tmp_path / "svc.db"), engine_jobs=False, llm_enabled=True,
                          llm_base_url=llm.base_url, llm_min_signal_score=0.0, llm_max_retries=0,
                          edgar_enabled=True, edgar_base_url=edgar.url, edgar_archives_url=edgar.url,
                          edgar_user_agent="Research Desk desk@example.com", slack_webhook_url=hook.url)
        rt = Runtime(s, today=DAY + timedelta(days=1))
        rt.clock = SimClock(OPEN + timedelta(minutes=30))
        yield rt, edgar, llm, hook
        rt.stop()
    edgar.stop()
    hook.stop()


def test_a_filing_reaches_the_score_through_the_llm_and_messages_reach_slack(services):
    rt, edgar, llm, hook = services
    assert {"llm_calls", "edgar_poll", "slack"} <= set(rt.job_intervals())
    filings = rt.run_edgar_poll()
    assert [(f.symbol, f.form) for f in filings] == [("NVDA", "8-K")]
    assert all(h["user-agent"] == "Research Desk desk@example.com" for _p, h in edgar.requests)
    assert rt.run_edgar_poll() == []  # the same accession numbers are never taken twice
    rt.run_tick()
    queued = rt.store.query("SELECT symbol, event_id, status FROM llm_calls ORDER BY id")
    by_symbol = {r["symbol"]: r for r in queued}
    assert by_symbol["NVDA"]["event_id"] == filings[0].accession and all(r["status"] == "queued" for r in queued)
    assert rt.run_llm_calls() == len(queued)
    nvda_8k = filings[0]
    sent = [b["messages"][1]["content"] for b in llm.requests]
    assert any("<filing>" in c and "NVDA" in c for c in sent)
    assert rt.store.scalar("SELECT text FROM events WHERE id=?", (nvda_8k.accession,))  # the document was read
    # the answer mixes into the next NVDA decision: score = 0.7 x technical + 0.3 x (-0.9 x 1.0)
    rt.clock.set(rt.clock.now() + timedelta(seconds=30))
    rt.run_tick()
    row = rt.store.one("SELECT score, raw_score FROM signals WHERE symbol='NVDA' ORDER BY id DESC LIMIT 1")
    assert row["score"] == pytest.approx(blend(row["raw_score"], -0.9, 1.0, 0.3), abs=1e-6)
    # messages: the daily briefing (with the LLM spend) goes to the webhook, once
    rt.run_session_events()
    assert rt.run_slack() >= 1
    texts = [b["text"] for b in hook.bodies]
    assert any("daily briefing" in t and "LLM" in t for t in texts)
    assert rt.run_slack() == 0

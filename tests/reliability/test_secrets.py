"""Canary secrets: every secret the app holds (Alpaca keys, OpenAI key, Slack webhook, Redis password, app
password) is set to a recognisable value; after a run with faults on every outside service, no log line,
no database row (saved research runs included) and no rendered page contains any of them, nor the last
characters of any (OpenAI echoes a wrong key's first 8 and last 4: ``sk-canar****QzXw``). The Redis password
travels in the URL's query (``?password=``), which the old masking of ``:pw@`` missed. Every canary ends in
letters no hex id, number or timestamp holds, so its tail is searched for too."""

from __future__ import annotations

import logging
from datetime import date, datetime, timedelta

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from core.clock import NY, UTC, SimClock
from core.config import ConfigError, load_settings
from core.research.__main__ import main as cli
from core.runtime import _RUNTIMES, Runtime, _key, stop_all
from core.venues.sim.synthetic import SyntheticMarket
from tests.fakes.alpaca_server import FakeAlpaca
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.redis_server import RedisServer, required
from tests.fakes.webhook import Webhook
from tests.test_app import APP

DAY = date(2025, 3, 4)
ANCHOR = date(2025, 3, 3)
CANARIES = {
    "ALPACA_API_KEY": "PKCANARYA1B2C3QZXW",
    "ALPACA_SECRET_KEY": "canarysecret9x8y7zVwXy",
    "OPENAI_API_KEY": "sk-canaryopenai55QzXq",
    "APP_PASSWORD": "canary-app-pass-WqZx",
}
HOOK_TOKEN = "canaryhooktokenZqWv"
REDIS_PW = "canary-redis-pw-XqZw"
TAIL = 4  # what a provider echoes of a secret
PAGES = ["live_signals", "approvals", "baskets", "risk", "history", "kpis", "research"]


def ny(hh: int, mm: int) -> datetime:
    return datetime(DAY.year, DAY.month, DAY.day, hh, mm, tzinfo=NY).astimezone(UTC)


def page_text(at: AppTest) -> str:
    """Everything a page put on screen: text elements, tables, metrics, charts' specs, widgets' values."""
    parts: list[str] = []
    for kind in ("markdown", "caption", "title", "header", "subheader", "error", "warning", "info", "success",
                 "code", "json", "text", "exception", "toast"):
        parts += [str(getattr(el, "value", "")) for el in getattr(at, kind, [])]
    parts += [f"{m.label} {m.value} {m.delta}" for m in at.metric]
    parts += [d.value.to_string() for d in at.dataframe]
    parts += [str(w.value) for w in (*at.text_input, *at.selectbox, *at.slider, *at.number_input)]
    parts += [c.proto.spec for c in at.get("plotly_chart")]
    return "\n".join(parts)


@pytest.fixture
def canaries(tmp_path, monkeypatch):
    redis_srv = RedisServer(password=REDIS_PW)
    try:
        redis_srv.start()
    except FileNotFoundError as e:
        if required():
            pytest.fail(str(e))
        pytest.skip(str(e))
    hook = Webhook()
    hook_url = hook.url.replace("/secret", f"/{HOOK_TOKEN}")
    market = SyntheticMarket(5, anchor=ANCHOR)
    alpaca = FakeAlpaca(market, universe_symbols=list(market.symbols), api_key=CANARIES["ALPACA_API_KEY"],
                        secret_key=CANARIES["ALPACA_SECRET_KEY"], rate_limit_per_min=1_000_000).start()
    alpaca.set_time(ny(9, 31))
    with FakeOpenAI() as llm:
        env = {**CANARIES, "DB_PATH": str(tmp_path / "canary.db"), "ENGINE_JOBS": "0", "SEED": "5",
               "BROKER": "alpaca", "ALPACA_BASE_URL": alpaca.url, "ALPACA_DATA_URL": alpaca.url,
               "ALPACA_TIMEOUT_S": "0.5", "ALPACA_BAR_GRACE_S": "0", "AUTO_MODE": "1", "LLM_ENABLED": "1",
               "LLM_BASE_URL": llm.base_url, "LLM_MIN_SIGNAL_SCORE": "0", "LLM_MAX_RETRIES": "0",
               "VOL_SPIKE_EVENT": "0", "SLACK_WEBHOOK_URL": hook_url, "SLACK_RETRIES": "0",
               # the password as a query parameter (redis-py reads it there too): not the ':pw@' form
               "REDIS_URL": f"redis://127.0.0.1:{redis_srv.port}/0?password={REDIS_PW}"}
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        st.cache_resource.clear()
        stop_all()
        yield alpaca, llm, hook, redis_srv
        st.cache_resource.clear()
        stop_all()
    alpaca.stop()
    hook.stop()
    redis_srv.cleanup()


def test_no_secret_reaches_a_log_a_row_or_a_page(canaries, caplog, capfd):
    alpaca, llm, hook, redis_srv = canaries
    caplog.set_level(logging.DEBUG)  # every logger, urllib3's and the SDKs' included
    settings = load_settings()
    rt = Runtime(settings, today=DAY + timedelta(days=1))
    _RUNTIMES[_key(settings.db_path)] = rt  # the app's pages attach to this runtime (as shared_runtime would)
    rt.clock = SimClock(ny(10, 0))
    rt.redis._retry_initial = 0.01
    alpaca.inject("500", times=2)
    alpaca.inject("reject_buying_power", path="/v2/orders", method="POST")
    # a wrong key: OpenAI's 401 echoes its first 8 and last 4 characters
    llm.script.extend([("bad_key", None), ("status", 401), ("text", "not json"), ("status", 500)])
    for k in range(40):
        if k == 20:
            redis_srv.stop()  # Redis goes away mid-run: its URL (with the password) is logged redacted
        t = rt.clock.now() + timedelta(seconds=30)
        rt.clock.set(t)
        alpaca.set_time(t)
        rt.run_tick()
        rt.run_llm_calls()
    hook.stop()  # a dead webhook: its failures are logged without the URL
    rt.run_session_events()
    rt.run_slack()
    with pytest.raises(ConfigError) as bad:  # a refused setting names the variable, never its secret value
        load_settings(alpaca_api_key=CANARIES["ALPACA_API_KEY"] + "  # key", broker="alpaca")
    assert "ALPACA_API_KEY" in str(bad.value)
    cli(["--days", "1", "--start", "2025-03-03", "--auto", "--save", "canary run"])  # a saved research run
    assert rt.store.scalar("SELECT COUNT(*) FROM research_runs") == 1
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    at.text_input[0].input(CANARIES["APP_PASSWORD"])
    at.button[0].click().run()
    screens = []
    for name in PAGES:
        at.switch_page(f"pages/{name}.py").run()
        assert not at.exception, (name, at.exception)
        screens.append(page_text(at))
    rt.stop()
    out, err = capfd.readouterr()
    db = _dump(rt.s.db_path)
    haystacks = {"logs": caplog.text + out + err, "database": db, "pages": "\n".join(screens),
                 "status": str(rt.status()) + repr(rt.s) + str(rt.s.redacted()) + str(bad.value)}
    # the run did exercise what it claims: orders, LLM calls, failovers, Slack attempts, pages with data
    assert alpaca.order_posts > 0 and len(llm.requests) >= 4 and rt.redis.failovers >= 1
    assert "Incorrect API key provided: sk-" in db  # the echo was stored (masked)
    assert "Actionable" in haystacks["pages"] and len(db) > 10_000
    secrets = [*CANARIES.values(), HOOK_TOKEN, REDIS_PW]
    secrets += [s[-TAIL:] for s in secrets]
    found = {(where, s) for where, text in haystacks.items() for s in secrets if s in text}
    assert not found, found


def _dump(path: str) -> str:
    import sqlite3

    con = sqlite3.connect(path)
    try:
        return "\n".join(con.iterdump())
    finally:
        con.close()

"""A real `streamlit run app.py`, a real headless Chromium: first signals, approve, the order in Trade history."""

from __future__ import annotations

import sqlite3
import time

import pytest

from tests.ci import ci_required
from tests.e2e import ARTIFACTS, AppServer, launch_chromium, open_page, wait_script_idle, wait_until

try:
    from playwright import sync_api
except ImportError as e:  # a missing tool is a failure under CI, a skip on a laptop without it
    if ci_required():
        raise ImportError(f"playwright is required under CI: {e}") from e
    pytest.skip(f"playwright not installed: {e}", allow_module_level=True)

# Fixed inputs: the first simulated session does not follow today's date, and the strategy makes the first
# tick produce an NVDA intent, so the tests wait for something certain, not for the market's luck.
SIM_START = "2025-03-10"
FIXED_MARKET = {"SIM_START": SIM_START, "SEED": "7", "STRATEGY": "tests.fakes.strategies:BullishNvda"}

PAGES = {"live_signals": "", "approvals": "approvals", "baskets": "baskets", "risk": "risk", "history": "history"}


def metric_value(page, label: str) -> str:  # type: ignore[no-untyped-def]
    box = page.locator("[data-testid='stMetric']", has=page.get_by_text(label, exact=True)).first
    return box.locator("[data-testid='stMetricValue']").inner_text()


def test_browser_signals_approve_and_history(tmp_path):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    db = tmp_path / "e2e.db"
    server = AppServer({
        **FIXED_MARKET, "DB_PATH": str(db), "SIM_SPEED": "6", "AUTO_MODE": "0", "INTENT_TTL_S": "3600",
        "UI_REFRESH_S": "1",
    }, tmp_path / "streamlit.log")
    try:
        server.wait_healthy()
        with sync_api.sync_playwright() as pw:
            browser = launch_chromium(pw)
            page = open_page(browser, server.url + "/")
            # the first signal rows: the decision counter moves off zero and the per-ticker table is drawn
            wait_until(lambda: int(metric_value(page, "Decisions")) > 0, 60, "first signal", page)
            page.wait_for_selector("[data-testid='stDataFrame']", timeout=30_000)
            page.screenshot(path=str(ARTIFACTS / "live_signals.png"), full_page=True)

            # toasts sit at the bottom right, narrow: never over the KPI tiles, gauges and intent cards at the top
            # (the container exists only while a toast shows: the page's own rule for it is checked)
            rule = page.evaluate("""() => [...document.querySelectorAll('style')].map(s => s.textContent)
                .find(t => t.includes('stToastContainer')) || null""")
            assert rule is not None and "top: auto !important" in rule and "bottom:" in rule, rule

            # approve the first pending intent
            page.goto(server.url + "/approvals")
            wait_script_idle(page)
            holder = page.locator("[class*='st-key-approve_']").first
            wait_until(lambda: holder.count() > 0 and holder.is_visible(), 120, "a pending intent", page)
            key = next(c for c in (holder.get_attribute("class") or "").split() if c.startswith("st-key-approve_"))
            intent_id = key.removeprefix("st-key-approve_")
            button = page.locator(f".{key} button")
            page.screenshot(path=str(ARTIFACTS / "approvals.png"), full_page=True)
            button.click()
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            status = wait_until(lambda: (con.execute("SELECT status FROM intents WHERE id=?", (intent_id,))
                                         .fetchone() or [None])[0] in ("submitted", "rejected")
                                and con.execute("SELECT status, note FROM intents WHERE id=?", (intent_id,)).fetchone(),
                                30, "the approval to be applied", page)
            assert status[0] == "submitted", status
            assert con.execute("SELECT COUNT(*) FROM orders WHERE intent_id=?", (intent_id,)).fetchone()[0] == 1
            # the answer says what was sent, and is still on screen 4 s (four refreshes) later
            answer = page.locator(".st-key-answer_approvals [data-testid='stAlert']", has_text="submitted: BUY")
            wait_until(lambda: answer.count() == 1 and answer.is_visible(), 30, "the approval's answer", page)
            said = answer.inner_text()
            assert intent_id in said, said
            time.sleep(4.0)  # not waiting for something that may happen: checking that something stays
            assert answer.count() == 1 and answer.is_visible() and answer.inner_text() == said

            # the order shows in Trade history
            page.goto(server.url + "/history")
            wait_script_idle(page)
            wait_until(lambda: int(metric_value(page, "Orders")) >= 1, 30, "the order in Trade history", page)
            page.screenshot(path=str(ARTIFACTS / "history.png"), full_page=True)

            page.goto(server.url + "/research")
            wait_script_idle(page)
            page.wait_for_selector("[data-testid='stForm']", timeout=30_000)
            page.screenshot(path=str(ARTIFACTS / "research.png"), full_page=True)
            for name in ("baskets", "risk"):
                page.goto(server.url + "/" + PAGES[name])
                wait_script_idle(page)
                page.wait_for_selector("[data-testid='stPlotlyChart']", timeout=30_000)
                time.sleep(1.0)  # let Plotly draw
                page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
            # the sidebar controls are on every page
            assert page.locator(".st-key-w_cutoff_delta").count() == 1
            assert page.locator(".st-key-w_cooldown_s").count() == 1
            browser.close()
            con.close()
        log = server.app_log()
        assert "Traceback" not in log, log[-3000:]
    finally:
        server.stop()


def test_browser_alpaca_paper_mode_against_the_local_server(tmp_path):
    """The app in Alpaca paper mode: the sidebar names the (masked) account; Approve sends one order to the server."""
    from datetime import date, datetime

    from core.runtime import default_sim_start
    from core.venues.sim.synthetic import SyntheticMarket
    from tests.fakes.alpaca_server import FakeAlpaca

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    # the server trades the same synthetic market the app shows, on the app's market clock
    anchor, start = default_sim_start(date(2000, 1, 3), date.fromisoformat(SIM_START))  # the first arg is unused
    market = SyntheticMarket(7, anchor=anchor)
    db = tmp_path / "alpaca.db"

    def follow_app_clock() -> None:
        try:
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            row = con.execute("SELECT value FROM meta WHERE key='sim_clock'").fetchone()
            con.close()
        except sqlite3.Error:
            return
        if row and datetime.fromisoformat(row[0]) > fake.now:
            fake.set_time(datetime.fromisoformat(row[0]))

    key, secret = "PKBROWSERCANARY123", "SECRETBROWSERCANARY456"
    with FakeAlpaca(market, universe_symbols=list(market.symbols), api_key=key, secret_key=secret,
                    rate_limit_per_min=100_000) as fake:
        fake.set_time(start)
        server = AppServer({
            "DB_PATH": str(db), "BROKER": "alpaca", "ALPACA_API_KEY": key,
            "ALPACA_SECRET_KEY": secret, "ALPACA_BASE_URL": fake.url, "SIM_SPEED": "6", **FIXED_MARKET,
            "INTENT_TTL_S": "3600", "UI_REFRESH_S": "1",
        }, tmp_path / "streamlit.log")
        try:
            server.wait_healthy()
            with sync_api.sync_playwright() as pw:
                browser = launch_chromium(pw)
                page = open_page(browser, server.url + "/approvals")
                sidebar = page.locator("[data-testid='stSidebar']")
                masked = f"Alpaca paper · account …{fake.account_number[-4:]}"
                wait_until(lambda: masked in sidebar.inner_text(), 30, "the Alpaca account label", page)
                assert fake.account_number not in sidebar.inner_text()  # masked, never the whole number
                holder = page.locator("[class*='st-key-approve_']").first
                wait_until(lambda: (follow_app_clock(), holder.count() > 0 and holder.is_visible())[1], 120,
                           "a pending intent", page)
                follow_app_clock()
                page.screenshot(path=str(ARTIFACTS / "alpaca_paper.png"), full_page=False)
                key_cls = next(c for c in (holder.get_attribute("class") or "").split()
                               if c.startswith("st-key-approve_"))
                page.locator(f".{key_cls} button").click()
                wait_until(lambda: fake.orders_created == 1, 30, "the order at the Alpaca-shaped server", page)
                page.wait_for_timeout(1500)
                assert fake.orders_created == 1 and fake.order_posts == 1
                html = page.content()
                browser.close()
            log = server.app_log()
            assert "Traceback" not in log, log[-3000:]
            for text in (log, html):
                assert key not in text and secret not in text
        finally:
            server.stop()

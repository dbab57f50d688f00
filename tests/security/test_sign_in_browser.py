"""A real `streamlit run app.py` and headless Chromium: wrong passwords from fresh browser sessions (no cookie,
no session state: what a reload or a script gets) are counted together, the address is locked out, the right
password during the lockout is refused, and the server's log has one line per failure, never the password.

The first lockout is an hour (APP_LOGIN_LOCKOUT_S), so nothing here races the wall clock."""

from __future__ import annotations

import pytest

from tests.ci import ci_required
from tests.e2e import AppServer, launch_chromium, wait_script_idle, wait_until

try:
    from playwright import sync_api
except ImportError as e:  # a missing tool is a failure under CI, a skip on a laptop without it
    if ci_required():
        raise ImportError(f"playwright is required under CI: {e}") from e
    pytest.skip(f"playwright not installed: {e}", allow_module_level=True)

PASSWORD = "browser-right-pw-QzXw"


def attempt(browser, url: str, password: str) -> str:  # type: ignore[no-untyped-def]
    """Sign in from a new browser context (a new session, nothing shared with the others); the page's text."""
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    try:
        page = context.new_page()
        page.goto(url)
        wait_script_idle(page)
        page.get_by_label("Password", exact=True).fill(password)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_function(
            "() => /Wrong password|Too many wrong passwords|Engine heartbeat/.test(document.body.innerText)",
            timeout=60_000)
        wait_script_idle(page)
        return page.inner_text("body")
    finally:
        context.close()


def test_wrong_passwords_from_new_browser_sessions_lock_the_address_out(tmp_path):
    server = AppServer({"DB_PATH": str(tmp_path / "app.db"), "ENGINE_JOBS": "0", "SIM_START": "2025-03-04",
                        "APP_PASSWORD": PASSWORD, "APP_LOGIN_LOCKOUT_S": "3600"}, tmp_path / "streamlit.log")
    try:
        server.wait_healthy()
        with sync_api.sync_playwright() as pw:
            browser = launch_chromium(pw)
            texts = [attempt(browser, server.url + "/", f"wrong-{k}") for k in range(6)]
            assert all("Wrong password." in t for t in texts[:4]), texts
            assert all("Too many wrong passwords: try again in 3600 s" in t for t in texts[4:5]), texts
            assert "Too many wrong passwords" in texts[5]
            right = attempt(browser, server.url + "/", PASSWORD)  # refused: the address is locked out
            assert "Too many wrong passwords" in right and "Engine heartbeat" not in right
            # a locked-out page says so before its form is sent: the server may log the last click after the
            # page showed the words, so wait for its line (certain to come) rather than stop the server first
            wait_until(lambda: server.log().count("sign-in refused") >= 2, 60, "the refused sign-ins in the log")
            browser.close()
    finally:
        server.stop()
    log = server.log()
    assert log.count("sign-in failed from local") == 5 and log.count("sign-in refused") == 2, log
    assert "wrong-" not in log and PASSWORD not in log

"""The pages live in pages/ and app.py's st.navigation owns them: a fresh session, whether it opens the root or
a bookmarked page, sees the seven pages once in the sidebar, and every page runs through app.py (its sidebar)."""

from __future__ import annotations

import pytest

from tests.ci import ci_required
from tests.e2e import ARTIFACTS, AppServer, launch_chromium, wait_script_idle, wait_until

try:
    from playwright import sync_api
except ImportError as e:
    if ci_required():
        raise ImportError(f"playwright is required under CI: {e}") from e
    pytest.skip(f"playwright not installed: {e}", allow_module_level=True)

SEVEN = ["Live signals", "Approvals", "Basket health", "Risk gauges", "Trade history", "KPIs", "Research"]


def nav_names(page) -> list[str]:  # type: ignore[no-untyped-def]
    # text: the icon's name, then the title. All read at once: counting the links and then reading the n-th raced a
    # rerun (the n-th was gone and Playwright waited 30 s for it)
    texts = page.locator("[data-testid='stSidebarNavLink']").all_inner_texts()
    return [t.strip().split("\n")[-1].strip() for t in texts]


def test_the_sidebar_lists_the_seven_pages_once_on_any_first_page(tmp_path):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    server = AppServer({"DB_PATH": str(tmp_path / "layout.db"), "ENGINE_JOBS": "0"}, tmp_path / "streamlit.log")
    try:
        server.wait_healthy()
        with sync_api.sync_playwright() as pw:
            browser = launch_chromium(pw)
            # the first visitor of a fresh server opens a bookmarked page: without care Streamlit would run
            # pages/history.py alone, with its own list of the pages/ folder, for every session after it
            for path in ("history", "", "approvals", "research"):
                page = browser.new_page(viewport={"width": 1280, "height": 800})  # a fresh session each time
                page.goto(f"{server.url}/{path}")
                wait_script_idle(page)
                wait_until(lambda: nav_names(page) == SEVEN, 60, f"the seven pages on /{path}", page)  # noqa: B023
                # the entry script ran: its sidebar (the engine's controls) is on the page
                wait_until(lambda: page.locator(".st-key-w_cutoff_delta").count() == 1, 30,  # noqa: B023
                           f"the app's sidebar on /{path}", page)
                assert nav_names(page) == SEVEN, (path, nav_names(page))
                page.close()
            browser.close()
        assert "Traceback" not in server.app_log()
    finally:
        server.stop()


def test_a_refused_configuration_lists_no_page_file_names_and_is_logged(tmp_path):
    """Issue 27: the configuration-error page stops before app.py's st.navigation; Streamlit then listed the pages/
    folder by file name ("approvals", "kpis", "live signals") in the sidebar."""
    server = AppServer({"DB_PATH": str(tmp_path / "bad.db"), "ENGINE_JOBS": "0", "RISK_PER_TRADE": "bogus"},
                       tmp_path / "streamlit.log")
    try:
        server.wait_healthy()
        with sync_api.sync_playwright() as pw:
            browser = launch_chromium(pw)
            for path in ("", "kpis"):
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                page.goto(f"{server.url}/{path}")
                wait_script_idle(page)
                wait_until(lambda: "RISK_PER_TRADE" in page.inner_text("[data-testid='stMain']"), 30,  # noqa: B023
                           f"the configuration error on /{path}", page)
                page.wait_for_timeout(500)
                assert nav_names(page) == [], nav_names(page)
                sidebar = page.locator("[data-testid='stSidebar']")
                text = sidebar.inner_text() if sidebar.count() else ""
                assert not any(name in text for name in ("approvals", "live signals", "kpis", "history")), text
                page.close()
            browser.close()
        assert server.app_log().count("ERROR ui.state: configuration error: RISK_PER_TRADE='bogus'") == 2
    finally:
        server.stop()

"""The Research page in a real Chromium against `streamlit run app.py`: a trader uploads a bar file, replays it
with two parameter sets, compares the two kept runs with the buy-and-hold line, checks the better one out of
sample, and sees a malformed file refused with its line. Each step leaves a screenshot in tests/artifacts/."""

from __future__ import annotations

import sqlite3
from datetime import date, datetime
from datetime import time as dtime

import pytest

from core.clock import NY, UTC
from core.universe import DEFAULT_UNIVERSE
from core.venues.sim.synthetic import SyntheticMarket
from tests.ci import ci_required
from tests.e2e import ARTIFACTS, AppServer, launch_chromium, wait_script_idle, wait_until

try:
    from playwright import sync_api
except ImportError as e:
    if ci_required():
        raise ImportError(f"playwright is required under CI: {e}") from e
    pytest.skip(f"playwright not installed: {e}", allow_module_level=True)

FIRST, LAST = date(2025, 3, 3), date(2025, 3, 7)  # five sessions of the synthetic market, written out as a file


def write_bars(path) -> None:  # type: ignore[no-untyped-def]
    market = SyntheticMarket(seed=11, universe=DEFAULT_UNIVERSE, anchor=FIRST)
    start = datetime.combine(FIRST, dtime(0), tzinfo=NY).astimezone(UTC)  # the file is its five sessions
    end = datetime.combine(date(2025, 3, 8), dtime(0), tzinfo=NY).astimezone(UTC)
    bars = market.bars(DEFAULT_UNIVERSE.all_symbols, start, end)
    bars.assign(timestamp=bars["timestamp"].map(lambda t: t.isoformat())).to_csv(path, index=False)


def run_form(page, name: str, delta_steps: int) -> None:  # type: ignore[no-untyped-def]
    """Name the run, move the cutoff-delta slider by arrow keys (0.01 a step) and press Run replay."""
    page.locator(".st-key-r_name input").fill(name)
    thumb = page.locator(".st-key-r_delta input[type='range']")
    thumb.focus()
    for _ in range(abs(delta_steps)):
        thumb.press("ArrowRight" if delta_steps > 0 else "ArrowLeft")
    page.get_by_role("button", name="Run replay").click()


def test_browser_research_on_an_uploaded_file(tmp_path):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    good = tmp_path / "my_bars.csv"
    write_bars(good)
    bad = tmp_path / "broken_bars.csv"
    lines = good.read_text().splitlines()[:40]
    lines.insert(5, "")  # a blank line: the error must still name the file's own line
    cells = lines[20].split(",")
    cells[2] = "n/a"  # the open of the file's line 21
    lines[20] = ",".join(cells)
    bad.write_text("\n".join(lines) + "\n")
    db = tmp_path / "research.db"
    server = AppServer({"DB_PATH": str(db), "ENGINE_JOBS": "0"}, tmp_path / "streamlit.log")
    try:
        server.wait_healthy()
        with sync_api.sync_playwright() as pw:
            browser = launch_chromium(pw)
            page = browser.new_page(viewport={"width": 1400, "height": 2600})  # tall: a screenshot shows a step whole
            page.goto(server.url + "/research")
            wait_script_idle(page)
            page.get_by_text("Your file", exact=True).click()
            wait_script_idle(page)
            page.locator("[data-testid='stFileUploaderDropzoneInput']").set_input_files(str(good))
            wait_until(lambda: page.get_by_text("my_bars.csv:", exact=False).count() > 0, 60, "the file's summary",
                       page)
            wait_script_idle(page)
            # the dates follow the file: its whole span (README: "its own span")
            assert page.get_by_text(f"5 sessions: {FIRST} … {LAST}").count() == 1
            page.screenshot(path=str(ARTIFACTS / "research_1_file.png"), full_page=True)

            run_form(page, "loose", -3)
            wait_until(lambda: page.get_by_text("Saved run #1", exact=False).count() > 0, 180, "the first run", page)
            wait_script_idle(page)
            done = page.get_by_text("Saved run #1", exact=False).inner_text()
            assert "file my_bars.csv" in done and f"{FIRST} … {LAST}" in done and "cutoff delta -0.03" in done
            page.screenshot(path=str(ARTIFACTS / "research_2_first_run.png"), full_page=True)

            run_form(page, "tight", 6)  # from -0.03 to +0.03
            wait_until(lambda: page.get_by_text("Saved run #2", exact=False).count() > 0, 180, "the second run",
                       page)
            wait_script_idle(page)
            chart = page.locator(".st-key-r_equity")
            wait_until(lambda: "Buy & hold, equal weight" in chart.inner_text(), 30, "the benchmark line", page)
            assert "#1 loose" in chart.inner_text() and "#2 tight" in chart.inner_text()
            assert page.locator("[data-testid='stDataFrame']").count() >= 2  # saved runs + the comparison
            page.screenshot(path=str(ARTIFACTS / "research_3_compare.png"), full_page=True)

            page.get_by_role("button", name="Run out-of-sample check").click()
            wait_until(lambda: page.get_by_text("Fold 1", exact=False).count() > 0, 240, "the out-of-sample check",
                       page)
            wait_script_idle(page)
            fold = page.locator("[data-testid='stMarkdownContainer'] p", has_text="Fold 1").first.inner_text()
            assert f"in-sample {FIRST}" in fold and "out-of-sample" in fold and "2025-03-07" in fold
            page.screenshot(path=str(ARTIFACTS / "research_4_out_of_sample.png"), full_page=True)

            page.locator("[data-testid='stFileUploaderDropzoneInput']").set_input_files(str(bad))
            wait_until(lambda: page.get_by_text("The file was refused", exact=False).count() > 0, 60,
                       "the refusal", page)
            refusal = page.get_by_text("The file was refused", exact=False).first.inner_text()
            assert "broken_bars.csv line 21" in refusal and "open" in refusal, refusal
            page.screenshot(path=str(ARTIFACTS / "research_5_bad_file.png"), full_page=True)
            assert "Traceback" not in page.content()
            browser.close()
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        kinds = [r[0] for r in con.execute("SELECT kind FROM research_runs ORDER BY id")]
        con.close()
        assert kinds == ["replay", "replay", "walk_forward"]
        log = server.app_log()
        assert "Traceback" not in log, log[-3000:]
    finally:
        server.stop()

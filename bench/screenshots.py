"""Every page of the app at 1280x800 and 1920x1080 in headless Chromium (issue 17: do the charts fit?).

Starts `streamlit run app.py` on a new database with the browser tests' fixed market (tests/test_e2e_browser.py:
SIM_START 2025-03-10, seed 7, the scripted NVDA strategy) at SIM_SPEED=60 in AUTO mode, with a saved replay
and a saved sweep (``python -m core.research --save``) so Research has a run, its candles and a heat map to show.
The app trades with the real strategy by default (``--strategy``; the scripted NVDA buyer holds forever, so it
closes no trade). Waits until the engine has closed a trade and traded ``--minutes`` of market time, then saves
tests/artifacts/screens/<page>_<width>x<height>.png (the window as a user sees it) and ..._full.png (the window
made as tall as the page). Not a test: look at the pictures.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e import ARTIFACTS, AppServer, launch_chromium, wait_script_idle  # noqa: E402

# the browser tests' fixed market (tests/test_e2e_browser.py FIXED_MARKET): the first tick already trades NVDA
FIXED_MARKET = {"SIM_START": "2025-03-10", "SEED": "7", "STRATEGY": "tests.fakes.strategies:BullishNvda"}
SIZES = ((1280, 800), (1920, 1080))
PAGES = {"live_signals": "", "approvals": "approvals", "baskets": "baskets", "risk": "risk", "history": "history",
         "kpis": "kpis", "research": "research"}
OUT = ARTIFACTS / "screens"


def research_cli(db: Path, *args: str) -> None:
    env = {**os.environ, "DB_PATH": str(db)}
    subprocess.run([sys.executable, "-m", "core.research", "--seed", "7", "--auto", *args], cwd=ROOT, env=env,
                   check=True, stdout=subprocess.DEVNULL)


def poll(fn, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = fn()
        if got:
            return got
        time.sleep(0.5)
    raise TimeoutError(f"timed out waiting for {what}")


def query(db: Path, sql: str) -> object:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        row = con.execute(sql).fetchone()
        return row[0] if row else None
    except sqlite3.Error:
        return None
    finally:
        con.close()


def shoot(browser, url: str, name: str, charts: bool) -> Path:  # type: ignore[no-untyped-def]
    paths = []
    for w, h in SIZES:
        page = browser.new_page(viewport={"width": w, "height": h})
        page.goto(url)
        wait_script_idle(page, 120_000)
        if charts:  # every chart drawn (plotly's svg in each)
            page.wait_for_selector("[data-testid='stPlotlyChart'] .main-svg", timeout=60_000)
        page.wait_for_timeout(1500)  # plotly's resize after layout; a screenshot script, not a test
        path = OUT / f"{name}_{w}x{h}.png"
        page.screenshot(path=str(path))  # what the screen shows
        paths.append(path)
        # the whole page: Streamlit scrolls inside its main block, so the window is made as tall as that block
        tall = page.evaluate("() => Math.max(...[...document.querySelectorAll('[data-testid=stMain], "
                             "[data-testid=stAppViewContainer]')].map(e => e.scrollHeight))")
        page.set_viewport_size({"width": w, "height": max(h, int(tall))})
        page.wait_for_timeout(1500)
        wait_script_idle(page, 120_000)
        path = OUT / f"{name}_{w}x{h}_full.png"
        page.screenshot(path=str(path))
        paths.append(path)
        page.close()
    return paths[-1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=int, default=120, help="market minutes to trade before the screenshots")
    ap.add_argument("--strategy", default="core.strategy:MomentumVwapStrategy",
                    help="the app's STRATEGY (the browser tests' scripted NVDA buyer never closes a trade)")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    from playwright import sync_api

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "screens.db"
        research_cli(db, "--start", "2025-03-03", "--end", "2025-03-05", "--save", "three days, default settings")
        server = AppServer({**FIXED_MARKET, "STRATEGY": args.strategy, "DB_PATH": str(db), "SIM_SPEED": "60",
                            "AUTO_MODE": "1", "UI_REFRESH_S": "2"}, Path(tmp) / "streamlit.log")
        try:
            server.wait_healthy()
            with sync_api.sync_playwright() as pw:
                browser = launch_chromium(pw)
                first = browser.new_page()
                first.goto(server.url)  # the engine starts with the first browser session
                wait_script_idle(first, 120_000)
                poll(lambda: query(db, "SELECT COUNT(*) FROM trades"), 600, "a closed trade")
                start = datetime.fromisoformat(str(poll(lambda: query(db, "SELECT MIN(ts) FROM signals"), 60,
                                                        "a tick")))
                poll(lambda: (query(db, "SELECT MAX(ts) FROM signals") or "") >=
                     (start + timedelta(minutes=args.minutes)).isoformat(), 60 * args.minutes, "the market minutes")
                first.close()
                for name, path in PAGES.items():
                    print("saved", shoot(browser, f"{server.url}/{path}", name, name != "approvals"))
                # a sweep saved last is the newest run: Research opens it (its heat map)
                research_cli(db, "--start", "2025-03-03", "--end", "2025-03-04", "--workers", "1",
                             "--sweep", "cutoff_delta=-0.04:0.04:0.02", "cooldown=60,180,300",
                             "--save", "sweep")
                print("saved", shoot(browser, f"{server.url}/research", "research_sweep", True))
                browser.close()
            log = server.app_log()  # less Streamlit's own tab-closed-while-connecting race (tests/e2e.py)
            if "Traceback" in log:
                print(log[log.index("Traceback") - 500:][:6000], file=sys.stderr)
                raise SystemExit("the app logged a traceback")
        finally:
            server.stop()


if __name__ == "__main__":
    main()

"""The sidebar's ".env differs" notice at 1280x800 (issue 27, item 2): docs/screens/sidebar_env_differs_1280x800.png.

A database whose cutoff delta a slider moved to +0.02, then a ``.env`` saying ``CUTOFF_DELTA=0.05``; the app runs
from a temporary folder holding that ``.env`` and a copy of ``.streamlit/`` (the repository's own ``.env`` is never
written). Not a test: look at the picture.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, date, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e import free_port, launch_chromium, wait_script_idle  # noqa: E402

OUT = ROOT / "docs" / "screens" / "sidebar_env_differs_1280x800.png"


def seed(db: Path) -> None:
    from core.config import load_settings
    from core.runtime import Runtime

    rt = Runtime(load_settings(db_path=str(db), engine_jobs=False, sim_start=date(2026, 12, 1)),
                 today=date(2026, 12, 5))
    try:  # 14:02 in New York
        rt.engine.set_params({"cutoff_delta": 0.02}, who="ui:demo", now=datetime(2026, 12, 4, 19, 2, tzinfo=UTC),
                             source="slider")
    finally:
        rt.stop()


def main() -> None:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        here = Path(tmp)
        db = here / "app.db"
        seed(db)
        shutil.copytree(ROOT / ".streamlit", here / ".streamlit")
        (here / ".env").write_text("CUTOFF_DELTA=0.05\n")
        port = free_port()
        env = {**os.environ, "DB_PATH": str(db), "ENGINE_JOBS": "0", "SIM_START": "2026-12-01",
               "RESEARCH_WARM_UP": "0", "PYTHONPATH": str(ROOT)}
        log = open(here / "server.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"),
                                 "--server.headless", "true", "--server.port", str(port),
                                 "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
                                 "--server.fileWatcherType", "none"], cwd=here, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            with sync_playwright() as p:
                browser = launch_chromium(p)
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                for _ in range(60):  # the server needs a moment to listen
                    try:
                        page.goto(f"http://127.0.0.1:{port}/")
                        break
                    except Exception:  # noqa: BLE001 - not listening yet
                        page.wait_for_timeout(500)
                wait_script_idle(page, 120_000)
                page.wait_for_selector(".st-key-w_env_cutoff_delta button", state="visible", timeout=60_000)
                page.wait_for_selector(".st-key-w_cutoff_delta", state="visible", timeout=60_000)
                for _ in range(60):  # the skeletons of a first run give way to the widgets
                    if page.locator("[data-testid='stSidebar'] [data-testid='stSkeleton']").count() == 0:
                        break
                    page.wait_for_timeout(500)
                page.locator(".st-key-w_env_cutoff_delta").scroll_into_view_if_needed()
                page.wait_for_timeout(2000)
                OUT.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(OUT))
                browser.close()
        finally:
            proc.terminate()
            proc.wait(timeout=20)
            log.close()
    print(OUT)


if __name__ == "__main__":
    main()

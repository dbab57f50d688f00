"""The session replay on Trade history, 1280 px wide (issue 28): docs/screens/session_replay_1280.png.

The fault test's live session (tests/alpaca_session.py, as tests/test_session_replay_alpaca.py runs it: a slipped
fill, a partial fill, a rejection, an order placed outside the engine, a bar revised after live saw it, a 60 s outage)
with two more disruptions, so the picture has every cause a live session can show: three minutes without a tick
(timing) and the engine stopped and started again three minutes later (restart). It trades through the
Alpaca-shaped server on 127.0.0.1; one replay caches the day's history beside the bars live kept; then the real app
opens the live database (this script holds its engine lock: the app only shows it), the page's "Replay this session"
is clicked and the panel is photographed whole (a tab 1280 px wide and tall enough for all of it: Streamlit draws
only what is in view). Not a test: look at the picture.

    .venv/bin/python bench/session_replay_screen.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from filelock import FileLock

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.alpaca_session import run_fault_session  # noqa: E402
from tests.e2e import app_page, wait_script_idle  # noqa: E402

OUT = ROOT / "docs" / "screens" / "session_replay_1280.png"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        fs = run_fault_session(Path(tmp), late=((10, 47), (10, 50)), down=((10, 53), (10, 56)))
        try:
            first = fs.replay()  # fetches (and caches) the day's history, as the page will read it
        finally:
            fs.fake.stop()
        print(f"replayed: {first.summary['by_cause']}")
        lock = FileLock(str(Path(fs.db).resolve()) + ".lock", timeout=0)
        lock.acquire()  # the engine's lock: the app opens the database to show it, never to trade on it
        try:
            env = {"DB_PATH": fs.db, "ALPACA_CACHE_DIR": fs.cache_dir, "ENGINE_JOBS": "0", "RESEARCH_WARM_UP": "0"}
            with app_page(env, Path(tmp) / "server.log", "/history", height=2000) as page:
                try:
                    page.locator(".st-key-session_replay_run button").click(timeout=60_000)
                    page.get_by_text("First divergence at").wait_for(timeout=180_000)
                except Exception:  # what the page shows instead, and the server's last words
                    page.screenshot(path=str(Path(tmp).parent / "session_replay_screen_failed.png"), full_page=True)
                    print((Path(tmp) / "server.log").read_text()[-3000:], file=sys.stderr)
                    raise
                wait_script_idle(page)
                panel = page.locator(".st-key-session_replay_panel")
                panel.scroll_into_view_if_needed()
                page.wait_for_timeout(2500)  # let plotly draw
                OUT.parent.mkdir(parents=True, exist_ok=True)
                panel.screenshot(path=str(OUT))
                print(OUT.relative_to(ROOT))
        finally:
            lock.release()


if __name__ == "__main__":
    main()

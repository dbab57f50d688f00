"""A search with its PBO and deflated Sharpe on the Research page at 1280x800 (issue 29):
docs/screens/search_odds_1280x800.png.

The study is the one bench/search_bench.py leaves (a 21-session search of cutoff delta and cooldown on the
synthetic market of seed 7, saved as a run): the page opens the newest saved run, and the picture shows its
chosen setting with the verdict, then the plots. Not a test: look at the picture.

    .venv/bin/python bench/search_bench.py --db /tmp/search_demo.db
    .venv/bin/python bench/search_screens.py /tmp/search_demo.db
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e import app_page  # noqa: E402

SCREENS = ROOT / "docs" / "screens"


def main(db: str) -> None:
    log = Path(db).with_suffix(".server.log")
    env = {"DB_PATH": db, "RESEARCH_WARM_UP": "0", "SIM_START": "2025-03-10"}
    with app_page(env, log, "/research", timeout_ms=180_000) as page:
        chosen = page.get_by_text("Chosen setting").first
        chosen.wait_for(state="visible", timeout=180_000)
        chosen.evaluate("e => e.scrollIntoView({block: 'start'})")
        page.wait_for_timeout(2500)  # the charts draw
        SCREENS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENS / "search_odds_1280x800.png"))
        print("search_odds_1280x800.png")

if __name__ == "__main__":
    main(sys.argv[1])

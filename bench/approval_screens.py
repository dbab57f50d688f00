"""An Approvals card and a refused approval at 1280x800 (issue 25): docs/screens/approval_card_1280x800.png and
docs/screens/approval_refused_1280x800.png.

The real app (`streamlit run app.py`) on a fixed simulated market whose strategy makes an NVDA intent on the first
tick, in manual mode at SIM_SPEED=30 with a one-hour approval window; the allowed move is set small
(APPROVAL_MAX_MOVE_PCT=0.001) so that the market's own drift soon refuses an approval. The first picture is a card as
it first shows; the second is taken after Approve is clicked on a card that says it would be refused now (a card
priced down more than 0.1 % since its signal). Not a test: look at the pictures.

    .venv/bin/python bench/approval_screens.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e import app_page  # noqa: E402

SCREENS = ROOT / "docs" / "screens"
ENV = {"SIM_START": "2025-03-10", "SEED": "7", "STRATEGY": "tests.fakes.strategies:BullishNvda", "SIM_SPEED": "30",
       "AUTO_MODE": "0", "INTENT_TTL_S": "3600", "UI_REFRESH_S": "1", "APPROVAL_MAX_MOVE_PCT": "0.001",
       "RESEARCH_WARM_UP": "0"}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, \
            app_page({**ENV, "DB_PATH": str(Path(tmp) / "screens.db")}, Path(tmp) / "server.log", "/approvals") as page:
        page.wait_for_selector("[class*='st-key-approve_'] button", state="visible", timeout=180_000)
        page.wait_for_timeout(1500)
        SCREENS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENS / "approval_card_1280x800.png"))
        print("approval_card_1280x800.png")
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:  # a card the market has moved past the small limit
            cards = page.locator("[class*='st-key-intent_']", has_text="would be refused now: NVDA moved")
            if cards.count():
                key = next(c for c in (cards.first.get_attribute("class") or "").split()
                           if c.startswith("st-key-intent_"))
                page.locator(f".st-key-approve_{key.removeprefix('st-key-intent_')} button").click()
                page.wait_for_selector(".st-key-answer_approvals", state="visible", timeout=30_000)
                page.wait_for_timeout(1500)
                page.screenshot(path=str(SCREENS / "approval_refused_1280x800.png"))
                print("approval_refused_1280x800.png")
                break
            page.wait_for_timeout(1000)
        else:
            print("no card moved past the limit within 10 minutes", file=sys.stderr)

if __name__ == "__main__":
    main()

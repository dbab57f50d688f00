"""The Research equity chart of a run over Thanksgiving week at 1280x800 (issue 27, item 6):
docs/screens/research_equity_thanksgiving_1280x800.png.

A replay of the synthetic market over 2026-11-23 … 2026-11-30 (Thanksgiving on the 26th, the 13:00 close on the 27th)
saved with the CLI into a fresh database; the app opens it under "5. Saved runs" (the newest run is open) and the
picture is taken of its equity chart: the market-hours axis leaves the holiday out and gives the half day its half.
Not a test: look at the picture.

    .venv/bin/python bench/thanksgiving_screen.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e import app_page  # noqa: E402

OUT = ROOT / "docs" / "screens" / "research_equity_thanksgiving_1280x800.png"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "thanksgiving.db"
        env = {**os.environ, "DB_PATH": str(db), "AUTO_MODE": "1"}
        subprocess.run([sys.executable, "-m", "core.research", "--start", "2026-11-23", "--end", "2026-11-30",
                        "--seed", "7", "--save", "Thanksgiving week"], cwd=ROOT, env=env, check=True,
                       stdout=subprocess.DEVNULL)
        env = {"DB_PATH": str(db), "ENGINE_JOBS": "0", "RESEARCH_WARM_UP": "0", "SIM_START": "2026-12-01"}
        with app_page(env, Path(tmp) / "server.log", "/research") as page:
            chart = page.locator("[data-testid='stPlotlyChart']").first
            chart.wait_for(state="visible", timeout=120_000)
            chart.scroll_into_view_if_needed()
            page.wait_for_timeout(2500)  # let plotly draw
            OUT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(OUT))
            print(OUT.name)

if __name__ == "__main__":
    main()

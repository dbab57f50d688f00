"""Soak benchmark: the real app for N minutes of accelerated simulation with a browser tab open.

Starts `streamlit run app.py` with SIM_SPEED=60 and AUTO_MODE=1, keeps Chromium on
the Live signals page (its fragments refresh every 2 s), visits every page once a
minute, and samples the server's RSS. Reports RSS growth after the first minute,
tracebacks in the log, job errors and the number of scheduler threads.
Goals (issue 3): RSS growth < 50 MB, no exceptions, one scheduler thread.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from playwright.sync_api import sync_playwright  # noqa: E402

from tests.e2e import CHROMIUM, AppServer  # noqa: E402

PAGES = ["", "approvals", "baskets", "risk", "history"]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--speed", type=float, default=60.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "soak.db"
        server = AppServer({"DB_PATH": str(db), "SIM_SPEED": str(args.speed), "AUTO_MODE": "1", "SEED": "7"},
                           Path(tmp) / "streamlit.log")
        samples: list[tuple[float, int]] = []
        try:
            server.wait_healthy()
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
                tab = browser.new_page(viewport={"width": 1400, "height": 1000})
                tab.goto(server.url + "/")
                visitor = browser.new_page(viewport={"width": 1400, "height": 1000})
                t0 = time.monotonic()
                end = t0 + args.minutes * 60
                next_visit = t0
                while time.monotonic() < end:
                    now = time.monotonic()
                    samples.append((now - t0, server.rss_kb()))
                    if now >= next_visit:
                        for p in PAGES:
                            visitor.goto(server.url + "/" + p)
                            visitor.wait_for_timeout(1500)
                        next_visit = now + 60
                    time.sleep(5)
                browser.close()
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            hb = con.execute("SELECT info FROM heartbeat WHERE name='runtime'").fetchone()
            runtime = json.loads(hb[0]) if hb else {}
            market = con.execute("SELECT value FROM meta WHERE key='sim_clock'").fetchone()
            counts = {t: con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                      for t in ("signals", "intents", "orders", "fills", "trades")}
            con.close()
        finally:
            server.stop()
        log = server.log()
    warm = [kb for t, kb in samples if t >= 60] or [kb for _, kb in samples]
    growth_mb = (warm[-1] - warm[0]) / 1024
    peak_mb = max(kb for _, kb in samples) / 1024
    result = {
        "minutes": args.minutes, "speed": args.speed, "market_time": market[0] if market else None,
        "rss_after_1min_mb": round(warm[0] / 1024, 1), "rss_end_mb": round(warm[-1] / 1024, 1),
        "rss_growth_mb": round(growth_mb, 1), "rss_peak_mb": round(peak_mb, 1),
        "tracebacks": log.count("Traceback"), "scheduler_threads": runtime.get("scheduler_threads"),
        "job_errors": runtime.get("job_errors"), **counts,
    }
    print(json.dumps(result))
    ok = growth_mb < 50 and result["tracebacks"] == 0 and runtime.get("scheduler_threads") == 1 \
        and not runtime.get("job_errors")
    if not ok:
        print(log[-5000:], file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

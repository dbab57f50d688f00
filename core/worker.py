"""The engine without a UI: ``python -m core.worker`` (or ``make worker``).

It runs the same APScheduler jobs as the app (ticks, stop checks, KPI snapshots, session events, and the
LLM, EDGAR and Slack jobs when configured) on the database in ``DB_PATH``. It holds that database's engine
lock, so ``streamlit run app.py`` on the same database attaches to it: the pages read what this process
writes, and clicks arrive here as commands (SQLite ``commands`` table). With ``REDIS_URL`` several workers
(one per account) share one data-API budget, the TTL locks and the signal stream.

SIGTERM or Ctrl-C stops it cleanly: running jobs finish, the database is closed, the lock released.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from typing import Any

from core.config import ConfigError, load_settings
from core.runtime import EngineLockedError, Runtime

log = logging.getLogger("core.worker")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.worker", description=__doc__.splitlines()[0])
    parser.add_argument("--status-every", type=float, default=60.0, help="log a status line every N seconds")
    parser.add_argument("--duration-s", type=float, default=None, help="stop after N seconds (tests, soaks)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    try:
        settings = load_settings()
    except ConfigError as e:
        print(f"configuration error: {e}", file=sys.stderr)
        return 2
    try:
        rt = Runtime(settings)
    except EngineLockedError as e:
        print(f"not started: {e}", file=sys.stderr)
        return 3
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("signal %s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    rt.start()
    log.info("worker running on %s (%s); SIGTERM or Ctrl-C stops it", settings.db_path, rt.broker_label())
    deadline = None if args.duration_s is None else time.monotonic() + args.duration_s
    try:
        while not stop.is_set():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            if stop.wait(min(args.status_every, left) if left is not None else args.status_every):
                break
            st = rt.status()
            log.info("market %s, jobs %s, errors %s%s", st["market_time"], ", ".join(st["jobs"]), st["errors"],
                     f", {st['redis']['backend']}" if st.get("redis") else "")
    finally:
        rt.stop()
    log.info("worker stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())

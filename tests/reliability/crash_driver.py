"""One engine process of the crash test (tests/reliability/test_crash_restart.py); the test kill -9s it.

    python -m tests.reliability.crash_driver --db X.db --fake-url http://127.0.0.1:PORT --bars bars.parquet
        --seed N [--sessions 2] [--from 14:00] [--until 11:00]

Builds the real ``Runtime`` (file lock, Engine, AlpacaBroker on alpaca-py) on the given SQLite file with
AUTO_MODE=1, the broker pointed at the Alpaca-shaped server living in the test process, and the bars of
the file replayed as market data. It ticks every 30 s of market time through the sessions of the file
after the first (a warm-up day), from one minute after each open to a few minutes after each close.

Restart: the time of the last tick that completed is stored in ``meta`` after that tick committed, so a
restarted driver re-runs the tick it was killed in (same ``now``: the engine's intent ids and the
deterministic client order ids come out the same) and carries on from there.

Before each tick the server is told the time (``POST /__test__/time``), since its clock lives in
another process.

On stdout: ``armed`` (with ``--wait-go``: imported, waiting for ``go`` on stdin), ``ready FIRST N`` (engine
built; it runs tick FIRST of N next), ``tick I`` after each committed tick, ``done`` at the end. Logs: stderr.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import time
from datetime import date, datetime, timedelta
from datetime import time as dtime
from typing import Any
from urllib.parse import urlsplit

import requests

from core.clock import NY, UTC, SimClock, session_bounds
from core.config import Settings, load_settings
from core.runtime import Runtime
from core.venues.sim.bar_files import ReplayMarket, load_bars

KEY, SECRET = "PKCRASHTEST000000001", "SECRETCRASHTEST0000000001"
LAST_TICK = "crash_driver:last_tick"
STEP_S = 30
SEND_DELAY_S = 0.06  # at most, before an order POST leaves this process
AFTER_CLOSE_S = 180  # ticks past the close: fills of the session's last bars are polled and ingested


def schedule(market: ReplayMarket, sessions: int, start: str | None = None, stop: str | None = None) -> list[datetime]:
    """Tick times: every 30 s from open+1 min to close+3 min of the sessions after the warm-up day; ``start``
    ("HH:MM", New York) moves the first session's first tick later, ``stop`` the last session's last tick earlier."""
    days = market.sessions[1:1 + sessions]
    out: list[datetime] = []
    for day in days:
        bounds = session_bounds(day)
        assert bounds is not None
        t = bounds[0].astimezone(UTC) + timedelta(minutes=1)
        end = bounds[1].astimezone(UTC) + timedelta(seconds=AFTER_CLOSE_S)
        if start and day == days[0]:
            t = max(t, _ny(day, start))
        if stop and day == days[-1]:
            end = min(end, _ny(day, stop))
        while t <= end:
            out.append(t)
            t += timedelta(seconds=STEP_S)
    return out


def _ny(day: date, hhmm: str) -> datetime:
    hh, mm = map(int, hhmm.split(":"))
    return datetime.combine(day, dtime(hh, mm), tzinfo=NY).astimezone(UTC)


def crash_settings(db: str, fake_url: str, bars: str, seed: int, *, auto_mode: bool = True) -> Settings:
    return load_settings(
        db_path=db, seed=seed, auto_mode=auto_mode, engine_jobs=False, market_data="replay", bars_file=bars,
        broker="alpaca", alpaca_api_key=KEY, alpaca_secret_key=SECRET, alpaca_base_url=fake_url,
        alpaca_data_url=fake_url,
        # longer than any answer the test's server delays on purpose: no timeout, so every order that
        # is still unresolved at a restart is one a kill left behind
        alpaca_timeout_s=5.0, alpaca_max_retries=2,
    )


def slow_order_posts(rt: Runtime, rng: random.Random) -> None:
    """Hold each order POST back a random moment before it leaves, as a slow network would: a kill then often
    lands after 'submitting' is committed and before the broker hears of the order (the resubmit path)."""
    session = rt.engine.broker.client._session  # type: ignore[attr-defined]  # alpaca-py's requests.Session
    send = session.request

    def request(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        if method.upper() == "POST" and urlsplit(url).path.endswith("/v2/orders"):
            time.sleep(rng.uniform(0.0, SEND_DELAY_S))
        return send(method, url, *args, **kwargs)

    session.request = request


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", required=True)
    ap.add_argument("--fake-url", required=True)
    ap.add_argument("--bars", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sessions", type=int, default=1)
    ap.add_argument("--from", dest="start", help="HH:MM New York: first tick of the first session (default: open)")
    ap.add_argument("--until", dest="stop", help="HH:MM New York: last tick of the last session (default: close)")
    ap.add_argument("--wait-go", action="store_true",
                    help="print 'armed' once imported, then wait for 'go' on stdin before opening the database")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format=f"%(asctime)s seed{args.seed} %(levelname)s %(name)s: %(message)s")

    market = ReplayMarket(load_bars(args.bars))
    times = schedule(market, args.sessions, args.start, args.stop)
    if args.wait_go:
        # a spare started while the previous engine still runs: Python's imports are not state, the database is
        print("armed", flush=True)
        if sys.stdin.readline().strip() != "go":
            return 3
    settings = crash_settings(args.db, args.fake_url, args.bars, args.seed)
    rt = Runtime(settings, clock=SimClock(times[0]), market=market)
    last = rt.store.get_meta(LAST_TICK)
    first = next((i for i, t in enumerate(times) if last is None or t > datetime.fromisoformat(last)), len(times))
    http = requests.Session()
    http.headers.update({"APCA-API-KEY-ID": KEY, "APCA-API-SECRET-KEY": SECRET})
    slow_order_posts(rt, random.Random(f"{args.seed}:{first}"))
    print(f"ready {first} {len(times)}", flush=True)
    for i in range(first, len(times)):
        t = times[i]
        http.post(f"{args.fake_url}/__test__/time", json={"at": t.isoformat()}, timeout=10).raise_for_status()
        rt.clock.set(t)
        rep = rt.run_tick()
        if rep.broker_error:
            logging.warning("tick %s: %s", t.isoformat(), rep.broker_error)
        # only after the tick's own commit: a kill before this line re-runs the same tick
        rt.store.set_meta(LAST_TICK, t.isoformat())
        rt.store.commit()
        print(f"tick {i}", flush=True)
    rt.stop()
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Soak: the live simulated engine at high speed for 24 simulated market hours, with a UI poller reading.

Runs the real ``Runtime`` (APScheduler jobs, simulated market and broker, AUTO_MODE=1) in this process and
a thread that reads what the pages read (latest scores, the decision stream, risk gauges, KPIs) every
0.5 s on its own read-only connection. Reports: RSS at start and end, job lag (scheduled time to the end
of the run) p50/p99 per job, ticks missed (APScheduler missed or max-instances events), job errors, UI
read errors, and duplicates (two broker orders for one intent or one client order id).

Targets (issue 9): RSS growth < 50 MB, zero missed ticks, zero duplicate orders. Issue 15: the tick itself
(``tick_ms``, Engine.tick's duration) p99 <= 2 ms, the tick job's lag p99 <= 10 ms.

    .venv/bin/python bench/soak.py                    # 24 market hours at SIM_SPEED=600 (~2.5 min)
    .venv/bin/python bench/soak.py --hours 2 --speed 300
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED  # noqa: E402

from core import views  # noqa: E402
from core.clock import is_rth  # noqa: E402
from core.config import load_settings  # noqa: E402
from core.metrics import kpi
from core.runtime import Runtime  # noqa: E402
from core.state.store import Store  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return 0.0
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hours", type=float, default=24.0, help="simulated market hours (regular sessions only)")
    ap.add_argument("--speed", type=float, default=600.0, help="SIM_SPEED")
    ap.add_argument("--max-wall-s", type=float, default=1800.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "soak.db")
        s = load_settings(db_path=db, sim_speed=args.speed, auto_mode=True, seed=7)
        rt = Runtime(s)
        lags: dict[str, list[float]] = defaultdict(list)
        missed: dict[str, int] = defaultdict(int)
        errors: dict[str, int] = defaultdict(int)

        def on_event(ev) -> None:  # noqa: ANN001
            if ev.code == EVENT_JOB_EXECUTED:
                lags[ev.job_id].append((datetime.now(UTC) - ev.scheduled_run_time).total_seconds())
            elif ev.code in (EVENT_JOB_MISSED, EVENT_JOB_MAX_INSTANCES):
                missed[ev.job_id] += 1
            elif ev.code == EVENT_JOB_ERROR:
                errors[ev.job_id] += 1

        stop = threading.Event()
        ui = {"reads": 0, "errors": []}

        def poll_ui() -> None:
            store = None
            while not stop.is_set():
                try:
                    store = store or Store(db, readonly=True)
                    views.latest_by_ticker(store)
                    views.decision_stream(store, 200)
                    now = rt.clock.now()
                    views.risk_gauges(store, s, now)
                    kpi.kpi_report(store, s, now - timedelta(hours=1), now)
                    ui["reads"] += 1
                except Exception as e:  # counted and reported, never hidden
                    ui["errors"].append(f"{type(e).__name__}: {e}")
                stop.wait(0.5)

        # Engine.tick's own duration (the lag above also holds the scheduler's wait): wall time, which includes
        # waiting for the interpreter lock while the UI poller thread computes KPIs, and the tick thread's CPU
        tick_ms: list[float] = []
        tick_cpu_ms: list[float] = []
        real_tick = rt.engine.tick

        def timed_tick(now: datetime):  # noqa: ANN202
            t, c = time.perf_counter(), time.thread_time()
            try:
                return real_tick(now)
            finally:
                tick_ms.append((time.perf_counter() - t) * 1000)
                tick_cpu_ms.append((time.thread_time() - c) * 1000)
        rt.engine.tick = timed_tick  # type: ignore[method-assign]
        rss0 = rss_mb()
        start_market = rt.clock.now()
        rt.start()
        rt.scheduler.add_listener(on_event, EVENT_JOB_EXECUTED | EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES
                                  | EVENT_JOB_ERROR)
        poller = threading.Thread(target=poll_ui, daemon=True)
        poller.start()
        t0 = time.monotonic()
        market_s, last = 0.0, start_market
        rss_samples = [rss0]
        while market_s < args.hours * 3600 and time.monotonic() - t0 < args.max_wall_s:
            time.sleep(1.0)
            now = rt.clock.now()
            if is_rth(last) and now > last and (now - last) < timedelta(hours=1):  # inside a session
                market_s += (now - last).total_seconds()
            last = now
            rss_samples.append(rss_mb())
        wall = time.monotonic() - t0
        stop.set()
        poller.join(5)
        rt.stop()
        con = Store(db, readonly=True)
        dup_intents = con.scalar("SELECT COUNT(*) FROM (SELECT intent_id FROM orders WHERE intent_id IS NOT NULL "
                                 "GROUP BY intent_id HAVING COUNT(*) > 1)")
        dup_broker = con.scalar("SELECT COUNT(*) FROM (SELECT client_order_id FROM sim_orders GROUP BY "
                                "client_order_id HAVING COUNT(*) > 1)")
        counts = {t: con.scalar(f"SELECT COUNT(*) FROM {t}") for t in ("signals", "intents", "orders", "fills",
                                                                        "trades")}
        con.close()
    result = {
        "market_hours": round(market_s / 3600, 2), "wall_s": round(wall, 1), "speed": args.speed,
        "rss_start_mb": round(rss0, 1), "rss_after_warmup_mb": round(rss_samples[min(30, len(rss_samples) - 1)], 1),
        "rss_end_mb": round(rss_samples[-1], 1),
        "rss_growth_after_warmup_mb": round(rss_samples[-1] - rss_samples[min(30, len(rss_samples) - 1)], 1),
        "job_lag_s": {j: {"p50": round(pct(v, 0.5), 3), "p99": round(pct(v, 0.99), 3), "runs": len(v)}
                      for j, v in sorted(lags.items())},
        "tick_ms": {"p50": round(pct(tick_ms, 0.5), 3), "p99": round(pct(tick_ms, 0.99), 3),
                    "max": round(max(tick_ms, default=0.0), 3), "ticks": len(tick_ms)},
        "tick_cpu_ms": {"p50": round(pct(tick_cpu_ms, 0.5), 3), "p99": round(pct(tick_cpu_ms, 0.99), 3),
                        "max": round(max(tick_cpu_ms, default=0.0), 3)},
        "ticks_missed": missed.get("tick", 0), "missed_by_job": dict(missed), "job_errors": dict(errors),
        "ui_reads": ui["reads"], "ui_errors": len(ui["errors"]), "ui_error_sample": ui["errors"][:3],
        "duplicate_orders_per_intent": dup_intents, "duplicate_client_order_ids": dup_broker, **counts,
    }
    print(json.dumps(result, indent=1))
    ok = (result["rss_growth_after_warmup_mb"] < 50 and result["ticks_missed"] == 0 and not dup_intents
          and not dup_broker and not errors and not ui["errors"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

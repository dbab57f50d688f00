"""One engine per process, driven by an APScheduler 3.x ``BackgroundScheduler`` (rules §12).

``Runtime`` owns the database file lock, the ``Engine``, the market clock and
the jobs. ``app.py`` creates exactly one per server process; a headless worker
can do the same. A second runtime on the same database, in this or another
process, fails fast with ``EngineLockedError`` instead of trading twice.

The simulated mode runs on ``SimSessionClock``: market time moves ``SIM_SPEED``
times faster than the wall clock through NYSE sessions of the synthetic market
and jumps over nights, weekends and holidays, so the app trades at any hour.
Every job runs with ``max_instances=1`` and ``coalesce=True``; a failing job is
logged, counted, backed off, and never takes the scheduler down.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from filelock import FileLock, Timeout

from core.clock import (
    NY,
    UTC,
    Clock,
    WallClock,
    ensure_utc,
    is_rth,
    minutes_to_close,
    next_session_on_or_after,
    previous_session,
    session_bounds,
    trading_date,
)
from core.clock import trading_sessions as _sessions_from
from core.config import Settings
from core.engine import Engine, TickReport
from core.metrics import kpi
from core.metrics.display import money
from core.secrets import mask_secrets
from core.state.decisions import decision_counts
from core.state.store import Store, iso
from core.venues.broker import Broker
from core.venues.marketdata import MarketData
from core.venues.sim.bar_files import ReplayMarket, load_bars
from core.venues.sim.synthetic import SyntheticMarket

log = logging.getLogger(__name__)

QUIET_AFTER_MIN = 60  # market minutes without an actionable signal before the quiet-market message
BRIEFING_LEAD_MIN = 30  # the daily briefing goes out this long before the open
PREFETCH_MIN = 10  # market minutes before a close from which the next session's bars are loaded ahead


class EngineLockedError(RuntimeError):
    """Another engine already owns this database."""


# ================================================================ clocks
def next_session_open(after: datetime) -> datetime:
    """The first regular-session open strictly after ``after`` (UTC)."""
    day = trading_date(after)
    for d in _sessions_from(day, 8):
        bounds = session_bounds(d)
        if bounds and bounds[0].astimezone(UTC) > after:
            return bounds[0].astimezone(UTC)
    raise ValueError(f"no session open after {after}")


class SimSessionClock:
    """Market time = start + speed x elapsed wall time, kept inside regular sessions.

    When market time reaches a session's close it continues at the next
    session's open: the simulated market never sleeps, so a trader opening
    the app at night still sees a trading day.
    """

    def __init__(self, start: datetime, speed: float, wall: Callable[[], float] = time.monotonic) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        self._wall = wall
        self._lock = threading.Lock()
        self.speed = float(speed)
        start = ensure_utc(start)
        self._base = start if is_rth(start) else next_session_open(start)
        self._wall0 = wall()

    def now(self) -> datetime:
        with self._lock:
            # whole milliseconds keep stored times readable; truncation keeps the clock monotonic
            t = self._base + timedelta(milliseconds=int((self._wall() - self._wall0) * self.speed * 1000))
            bounds = session_bounds(trading_date(self._base))
            if bounds is None or t >= bounds[1].astimezone(UTC):
                # session over: continue at the next open (the bit past the close is dropped)
                close = bounds[1].astimezone(UTC) if bounds else self._base
                self._base, self._wall0 = next_session_open(close), self._wall()
                return self._base
            return t

    def set_speed(self, speed: float) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        now = self.now()
        with self._lock:
            self._base, self._wall0, self.speed = now, self._wall(), float(speed)


def default_sim_start(today: date, first_session: date | None = None) -> tuple[date, datetime]:
    """(synthetic anchor day, first market time) for a new simulated database.

    Trading starts one minute after the open of ``first_session`` (snapped forward to a session), or of the
    session before ``today`` when none is given. The session before it is the anchor, a warm-up day (bars
    exist, nothing trades), so the strategy has history and the first tick already scores every ticker. The
    anchor never changes the bars: a day's synthetic bars depend only on the seed, the date and the universe.
    """
    first = next_session_on_or_after(first_session) if first_session else previous_session(today)
    anchor = previous_session(first)
    open_ = session_bounds(first)[0].astimezone(UTC)  # type: ignore[index]
    return anchor, open_ + timedelta(minutes=1)


# ================================================================ wiring
def build_market(settings: Settings, store: Store, today: date,
                 budget_clock: Callable[[], float] = time.time) -> tuple[MarketData, Clock]:
    """The market-data port and the clock that goes with it, restored from the database if it has run before."""
    if settings.market_data == "synthetic":
        anchor_s, clock_s = store.get_meta("sim_anchor"), store.get_meta("sim_clock")
        if anchor_s is None or clock_s is None:
            anchor, start = default_sim_start(today, settings.sim_start)
            store.set_meta("sim_anchor", anchor.isoformat())
            store.set_meta("sim_clock", start.isoformat())
            store.commit()
        else:
            anchor, start = date.fromisoformat(anchor_s), datetime.fromisoformat(clock_s)
        market = SyntheticMarket(settings.seed, settings.universe, anchor=anchor)
        return market, SimSessionClock(start, settings.sim_speed)
    if settings.market_data == "replay":
        if not settings.bars_file:
            raise ValueError("MARKET_DATA=replay needs BARS_FILE")
        replay = ReplayMarket(load_bars(settings.bars_file))
        first = replay.sessions[0]
        clock_s = store.get_meta("sim_clock")
        start = datetime.fromisoformat(clock_s) if clock_s else session_bounds(first)[0].astimezone(UTC)  # type: ignore[index]
        return replay, SimSessionClock(start, settings.sim_speed)
    if settings.market_data == "alpaca":
        from core.venues.alpaca.broker import AlpacaCaller, RequestBudget
        from core.venues.alpaca.marketdata import AlpacaMarketData, make_data_client

        client = make_data_client(_secret(settings.alpaca_api_key), _secret(settings.alpaca_secret_key),
                                  url_override=settings.alpaca_data_url, timeout_s=settings.alpaca_timeout_s)
        # the data API has its own 200/min limit, separate from the trading API's
        caller = AlpacaCaller(RequestBudget(settings.alpaca_requests_per_min, clock=budget_clock),
                              max_retries=settings.alpaca_max_retries)
        from core.venues.alpaca.bar_cache import LiveBarKeeper, live_root

        md = AlpacaMarketData(client, caller=caller, feed=settings.alpaca_feed, grace_s=settings.alpaca_bar_grace_s,
                              cache_dir=settings.alpaca_cache_dir)
        # every bar the engine is served, with its source and the engine's time of receipt (a session replay
        # compares them with the history's copies: a bar revised later is the ``data`` cause)
        md.keeper = LiveBarKeeper(live_root(settings.alpaca_cache_dir, settings.alpaca_feed),
                                  f"alpaca-live:{settings.alpaca_feed}",
                                  clock=lambda: datetime.fromtimestamp(budget_clock(), UTC))
        return md, WallClock()
    raise ValueError(f"MARKET_DATA={settings.market_data}: not available in this build")


def build_shared_backends(settings: Settings, store: Store) -> tuple[Any, dict[str, Any]]:
    """With REDIS_URL: the Redis link and the Engine keyword arguments for the shared token buckets, TTL keys
    and signal stream, each falling back to its embedded twin while Redis is unreachable. Without: (None, {})."""
    if settings.redis_url is None or not settings.redis_url.get_secret_value().strip():
        return None, {}
    from core.services.buckets import LocalTokenBuckets
    from core.services.redis_buckets import RedisTokenBuckets
    from core.services.redis_kv import RedisKV
    from core.services.redis_link import RedisLink
    from core.services.redis_stream import SignalStream
    from core.state.kv import SqliteKV

    link = RedisLink(settings.redis_url.get_secret_value().strip(), socket_timeout_s=settings.redis_timeout_s)
    caps = {"A": settings.tier_a_tokens, "B": settings.tier_b_tokens, "Reserve": settings.reserve_tokens}
    local = LocalTokenBuckets(caps, borrow_window_s=settings.reserve_borrow_window_s)
    shared: dict[str, Any] = {
        "buckets": RedisTokenBuckets(link, caps, settings.reserve_borrow_window_s, local=local),
        "kv": RedisKV(link, SqliteKV(store)),
    }
    key = _secret(settings.redis_signing_key).strip()
    if key:  # the stream only with signed messages: anyone who reaches Redis could otherwise feed the engine
        shared["stream"] = SignalStream(link, settings.redis_group, signing_key=key.encode())
    else:
        log.warning("REDIS_SIGNING_KEY is not set: signals are decided in this process, not shared on the stream")
    return link, shared


def _secret(value: Any) -> str:
    return "" if value is None else value.get_secret_value()


def build_broker(settings: Settings, store: Store, clock: Callable[[], float] = time.time) -> Broker | None:
    """The broker port: None means the engine's simulated broker. ``clock`` (epoch seconds) paces the request
    budget: the wall clock live, the market clock when a replay drives an Alpaca-shaped server."""
    if settings.broker != "alpaca":
        return None
    from core.venues.alpaca.broker import AlpacaBroker, AlpacaCaller, RequestBudget, make_trading_client

    client = make_trading_client(_secret(settings.alpaca_api_key), _secret(settings.alpaca_secret_key),
                                 paper=settings.alpaca_paper, url_override=settings.alpaca_base_url,
                                 timeout_s=settings.alpaca_timeout_s)
    caller = AlpacaCaller(RequestBudget(settings.alpaca_requests_per_min, clock=clock),
                          max_retries=settings.alpaca_max_retries)
    return AlpacaBroker(store, client, caller=caller)


@dataclass
class JobStatus:
    name: str
    interval_s: float
    runs: int = 0
    errors: int = 0
    consecutive_errors: int = 0
    running: bool = False
    last_run: str | None = None  # wall time, UTC
    last_market_time: str | None = None
    last_duration_ms: float | None = None
    last_error: str | None = None
    skip_until: float = 0.0  # monotonic; back-off after repeated failures


class Runtime:
    """The engine, its clock and its jobs; one per database, started once."""

    def __init__(self, settings: Settings, *, today: date | None = None, clock: Clock | None = None,
                 market: MarketData | None = None, wall: Callable[[], float] = time.time) -> None:
        self.s = settings
        self.db_path = settings.db_path
        lock_path = (":memory:" if self.db_path == ":memory:" else str(Path(self.db_path).resolve())) + ".lock"
        self._flock = FileLock(lock_path, timeout=0) if self.db_path != ":memory:" else None
        if self._flock is not None:
            Path(lock_path).parent.mkdir(parents=True, exist_ok=True)
            try:
                self._flock.acquire()
            except Timeout:
                raise EngineLockedError(f"another engine is already running on {self.db_path}") from None
        try:
            self.store = Store(self.db_path)
            today = today or datetime.now(NY).date()  # the wall date only picks the first simulated day
            market_clock = lambda: self.clock.now().timestamp()  # noqa: E731  (self.clock is set just below)
            built_market, built_clock = (build_market(settings, self.store, today, market_clock) if market is None
                                         else (market, None))
            self.clock: Clock = clock or built_clock or WallClock()
            broker = build_broker(settings, self.store, market_clock)
            self.redis, shared = build_shared_backends(settings, self.store)
            # ``wall``: the approval window of a manual intent runs on it (tests pass a clock they move)
            self.engine = Engine(settings, self.store, built_market, broker=broker, wall=wall, **shared)
        except BaseException:
            if self._flock is not None:
                self._flock.release()
            raise
        self.live_bars = getattr(self.engine.feed.market, "keeper", None)  # LiveBarKeeper of an Alpaca feed
        self.scheduler: BackgroundScheduler | None = None
        self.jobs: dict[str, JobStatus] = {}
        self.started_at = time.time()
        self._stopped = False
        self._quiet_sent_at: float | None = None
        self._side_store: Store | None = None
        self._edgar: Any = None
        self._slack: Any = None

    # ------------------------------------------------------------ lifecycle
    @property
    def speed(self) -> float:
        return float(getattr(self.clock, "speed", 1.0))

    def wall_now(self) -> float:
        """The wall clock the approval windows run on (POSIX seconds)."""
        return self.engine.wall() if self.engine.wall is not None else time.time()

    def job_intervals(self) -> dict[str, float]:
        """Wall-clock seconds between runs: market intervals divided by the simulation speed."""
        sp = self.speed
        out = {
            "tick": max(0.25, 5.0 / sp),
            "stop_checks": max(0.5, self.s.stop_check_interval_s / sp),
            "kpi_snapshot": max(1.0, 3600.0 / sp),
            "session_events": max(0.5, 60.0 / sp),
        }
        # outside services (core.services: llm, edgar, slack) run on wall time, each on its own job and connection
        if self.engine.llm is not None:
            out["llm_calls"] = 1.0
        if self.s.edgar_enabled:
            out["edgar_poll"] = float(self.s.edgar_poll_s)
        if self.s.slack_webhook_url is not None:
            out["slack"] = 2.0
        return out

    def start(self) -> Runtime:
        if self.scheduler is not None:
            return self
        intervals = self.job_intervals()
        if not getattr(self.engine.feed.market, "live", False):
            # the session's bars before the first tick, not inside it (a few days of warm-up bars: longer than
            # the tick interval at SIM_SPEED=60); a live vendor's bars come minute by minute from the tick
            with self.engine.lock:
                self.engine.feed.ensure(self.clock.now())
        sched = BackgroundScheduler(
            # a worker per job: a slow LLM, EDGAR or Slack call can never hold back a tick
            timezone=UTC, job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": 30},
            executors={"default": {"type": "threadpool", "max_workers": len(intervals)}},
        )
        jobs: dict[str, Callable[[], Any]] = {
            "tick": self.run_tick, "stop_checks": self.run_stop_checks,
            "kpi_snapshot": self.run_kpi_snapshot, "session_events": self.run_session_events,
            "llm_calls": self.run_llm_calls, "edgar_poll": self.run_edgar_poll, "slack": self.run_slack,
        }
        for name, interval in intervals.items():
            self.jobs[name] = JobStatus(name, interval)
            sched.add_job(self._guarded, "interval", seconds=interval, args=(name, jobs[name]), id=name, name=name,
                          next_run_time=datetime.now(UTC))
        sched.start()
        self.scheduler = sched
        # Stop before the interpreter shuts thread pools down (threading's exit hooks run before atexit's),
        # or the scheduler thread would submit a job to a closed pool on Ctrl-C.
        register = getattr(threading, "_register_atexit", None)
        (register or atexit.register)(self.stop)
        log.info("engine started on %s (speed x%s, jobs %s)", self.db_path, self.speed, ", ".join(self.jobs))
        return self

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self.scheduler is not None:
            with contextlib.suppress(Exception):  # already shut down at interpreter exit
                self.scheduler.shutdown(wait=True)
        self.flush_live_bars()
        with self.engine.lock:
            if self._side_store is not None and self._side_store is not self.store:
                self._side_store.close()
            self.store.close()
        if self._flock is not None:
            self._flock.release()

    @property
    def running(self) -> bool:
        return self.scheduler is not None and self.scheduler.running and not self._stopped

    # ------------------------------------------------------------ jobs
    def _guarded(self, name: str, fn: Callable[[], Any]) -> None:
        st = self.jobs[name]
        if time.monotonic() < st.skip_until:
            return
        st.running = True
        t0 = time.perf_counter()
        try:
            fn()
            st.consecutive_errors = 0
        except BaseException as e:  # CancelledError, SystemExit, GeneratorExit are a job's failures too
            st.errors += 1
            st.consecutive_errors += 1
            st.last_error = mask_secrets(_describe(e), self.s)  # shown in the sidebar and stored
            # back off 2, 4, ... 60 s so a persistent fault cannot spin the CPU or flood the log
            st.skip_until = time.monotonic() + min(60.0, 2.0 ** st.consecutive_errors)
            log.error("job %s failed (%d in a row): %s\n%s", name, st.consecutive_errors, st.last_error,
                      mask_secrets(traceback.format_exc(), self.s))
            self._record_job_error(name, st.last_error)
            if isinstance(e, KeyboardInterrupt):
                raise  # recorded, but Ctrl-C while a job runs on the caller's thread still stops the program
        finally:
            st.running = False
            st.runs += 1
            st.last_run = datetime.now(UTC).isoformat()
            st.last_duration_ms = round((time.perf_counter() - t0) * 1000, 2)

    def _record_job_error(self, name: str, text: str) -> None:
        try:
            with self.engine.lock:
                self.store.rollback()
                self.store.notify("error", f"job {name}: {text}", self.clock.now())
                self.store.commit()
        except Exception:  # the database itself may be the fault; the log has it
            log.exception("could not record the failure of job %s", name)

    def run_tick(self) -> TickReport:
        with self.engine.lock:
            now = self.clock.now()
            rep = self.engine.tick(now)
            if "tick" in self.jobs:
                self.jobs["tick"].last_market_time = now.isoformat()
            if not isinstance(self.clock, WallClock) and rep.storage_error is None:  # resume where it stopped
                self.store.set_meta("sim_clock", now.isoformat())
                self.store.commit()
            return rep

    def run_stop_checks(self) -> list[str]:
        with self.engine.lock:
            now = self.clock.now()
            out = self.engine.check_stops(now)
            self.store.commit()
            return out

    def run_kpi_snapshot(self) -> dict[str, Any]:
        with self.engine.lock:
            now = self.clock.now()
            m = kpi.kpi_report(self.store, self.s, now - timedelta(hours=1), now)  # the hour just ended
            m["portfolio"] = self.engine.portfolio_summary(now)
            self.store.insert("kpi_snapshots", {"ts": iso(now), "json": json.dumps(m, default=float)},
                              ignore=True)
            self.store.commit()
            self.engine.run_protections(now)  # the rollback rules also run on every snapshot
            return m

    def side_store(self) -> Store:
        """A second connection for the outside-service jobs: their writes never join the engine's transaction."""
        if self._side_store is None:
            self._side_store = self.store if self.db_path == ":memory:" else Store(self.db_path)
        return self._side_store

    def run_llm_calls(self) -> int:
        """Make the LLM calls the gate queued (no engine lock: the model may be slow)."""
        return self.engine.llm.run_pending(self.clock.now, store=self.side_store()) if self.engine.llm else 0

    def run_edgar_poll(self) -> list[Any]:
        """New filings of the universe become events (the engine picks them up on its next tick)."""
        from core.services.edgar import EdgarClient, load_cik_map, poll_edgar

        if self._edgar is None:
            self._edgar = EdgarClient.from_settings(self.s)
        now = self.clock.now()
        return poll_edgar(self._edgar, self.side_store(), self.s.universe.stocks, self.s.edgar_form_list, now,
                          # a day back: SEC stamps some acceptance times in New York time marked "Z"; the
                          # accession number dedupes, and freshness is judged on when we first saw the filing
                          cik_map=load_cik_map(), since=now - timedelta(days=1),
                          max_chars=self.s.llm_max_filing_chars)

    def run_slack(self) -> int:
        """Forward new notifications to Slack (HTTP outside every lock the engine uses)."""
        from core.services.slack import forward_notifications, notifier_from_settings

        if self._slack is None:
            self._slack = notifier_from_settings(self.s)
        return forward_notifications(self.side_store(), self._slack) if self._slack else 0

    def flush_live_bars(self, *, only_if_due: bool = False) -> int:
        """Write the live bars received since the last flush to the bar cache (no engine lock: the tick only
        appends to the keeper's list). Returns the rows added; a failed write is logged and retried next time."""
        keeper = self.live_bars
        if keeper is None or (only_if_due and not keeper.due()):
            return 0
        try:
            return keeper.flush()
        except Exception:  # logged by the keeper; the bars stay in memory for the next flush
            return 0

    def run_session_events(self) -> list[str]:
        """Start-of-day equity and daily briefing once per session; quiet-market message when nothing happens; in a
        session's last ``PREFETCH_MIN`` minutes, the next session's bars loaded ahead (``prefetch_next_session``);
        the live bars received written to the bar cache every few minutes (``flush_live_bars``)."""
        sent: list[str] = []
        if self.prefetch_next_session(self.clock.now()):
            sent.append("prefetch")
        if self.flush_live_bars(only_if_due=True):
            sent.append("live_bars")
        with self.engine.lock:
            now = self.clock.now()
            day = trading_date(now).isoformat()
            bounds = session_bounds(trading_date(now))
            if bounds is not None and now >= bounds[0].astimezone(UTC) - timedelta(minutes=BRIEFING_LEAD_MIN):
                self.engine.roll_day(now)  # start-of-day equity snapshot
                if self.store.get_meta("briefing_date") != day:
                    self.store.notify("info", self.daily_briefing(now), now)
                    self.store.set_meta("briefing_date", day)
                    sent.append("briefing")
            if is_rth(now):
                since = iso(now - timedelta(minutes=QUIET_AFTER_MIN))
                opened = session_bounds(trading_date(now))
                long_enough = opened is not None and now - opened[0].astimezone(UTC) >= timedelta(
                    minutes=QUIET_AFTER_MIN)
                last_quiet = self.store.get_meta("quiet_at")
                recent_quiet = last_quiet is not None and datetime.fromisoformat(last_quiet) > now - timedelta(
                    minutes=QUIET_AFTER_MIN)
                actionable = self.store.scalar(
                    "SELECT COUNT(*) FROM signals WHERE decision='actionable' AND ts >= ?", (since,))
                if long_enough and not recent_quiet and not actionable:
                    counts = decision_counts(self.store, "reason", "decision='suppressed'", start=since, bounds="[)")
                    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0] or ""))[:3]
                    why = ", ".join(f"{reason} {n}" for reason, n in top) or "no signals"
                    self.store.notify("info", f"quiet market: nothing actionable in {QUIET_AFTER_MIN} min ({why})",
                                      now)
                    self.store.set_meta("quiet_at", now.isoformat())
                    sent.append("quiet")
            self.store.upsert("heartbeat", {"name": "runtime", "ts": iso(now), "info": json.dumps({
                "pid": os.getpid(), "scheduler_threads": len(scheduler_threads()),
                "job_errors": sum(j.errors for j in self.jobs.values()), "speed": self.speed,
                "redis": self.redis.status() if self.redis is not None else None})})
            self.store.commit()
        return sent

    def prefetch_next_session(self, now: datetime) -> bool:
        """Near a session's close, load and score the next session's bars without holding the engine lock while
        computing (``MarketFeed.prefetch``): the first tick after the open found nothing loaded and did it itself,
        0.25-0.4 s under the lock, longer than the tick interval at SIM_SPEED=60."""
        left = minutes_to_close(now)
        if left is None or left > PREFETCH_MIN:
            return False
        return self.engine.feed.prefetch(next_session_open(now), self.engine.lock)

    def daily_briefing(self, now: datetime) -> str:
        """Before the open: positions, the last session's P&L, today's risk budget, LLM use this month."""
        acct = self.engine.broker.get_account(now)
        held = self.store.query("SELECT symbol, qty FROM positions WHERE qty > 0 ORDER BY symbol")
        last = previous_session(trading_date(now))
        bounds = session_bounds(last)
        prev = {"n": 0, "pnl": 0.0}
        if bounds is not None:
            prev = self.store.query("SELECT COUNT(*) AS n, COALESCE(SUM(pnl), 0) AS pnl FROM trades WHERE exit_ts >= ? "
                                    "AND exit_ts < ?", (iso(bounds[0].astimezone(UTC)), iso(now)))[0]
        p, s = self.engine.params, self.s
        pos = ", ".join(f"{r['symbol']} x{r['qty']:g}" for r in held) or "flat"
        llm = (f"LLM {self.engine.llm.month_spend(now):,.0f} / {s.llm_monthly_budget:,.0f} {s.llm_budget_currency} "
               f"this month" if self.engine.llm else "LLM off")
        return (f"daily briefing {trading_date(now)}: equity ${acct.equity:,.2f}, positions {pos}; {last}: "
                f"{prev['n']} closed trades, P&L {money(prev['pnl'])}; risk budget: {s.risk_per_trade:.1%} per trade, "
                f"{s.max_concurrent_risk:.1%} concurrent, daily loss limit {money(-acct.equity * s.daily_loss_limit)}; "
                f"{llm}; cutoff delta {p.cutoff_delta:+.2f}, cooldown {p.cooldown_s}s, "
                f"{'AUTO' if p.auto_mode else 'manual approval'}{', PAUSED' if p.paused else ''}, profile {p.profile}")

    # ------------------------------------------------------------ commands from the UI
    def send_command(self, kind: str, payload: dict[str, Any], *, who: str = "ui") -> dict[str, Any]:
        """Persist a command, then apply it now if the engine is free (else on its next tick)."""
        now = self.clock.now()
        cid = self.store_command(kind, payload, who=who, now=now)
        if self.engine.lock.acquire(timeout=5.0):
            try:
                self.engine.apply_commands(self.clock.now())
            finally:
                self.engine.lock.release()
        row = self.store.one("SELECT status, result FROM commands WHERE id=?", (cid,)) or {}
        return {"id": cid, "status": row.get("status", "new"), "result": row.get("result")}

    def quote_pending(self) -> dict[str, Any]:
        """Every waiting intent as Approve would send it now (``core.engine.sending.SendQuote`` by intent id)."""
        return self.engine.orders.quote_pending(self.clock.now())

    def store_command(self, kind: str, payload: dict[str, Any], *, who: str, now: datetime) -> int:
        with self.engine.lock:
            return self.store.send_command(kind, payload, who=who, now=now)

    # ------------------------------------------------------------ status
    def broker_label(self) -> str:
        """Which account is connected, account number masked (never a key)."""
        b = self.engine.broker
        if self.s.broker != "alpaca":
            return "simulated broker"
        kind = "paper" if self.s.alpaca_paper else "LIVE"
        describe = getattr(b, "describe", None)
        return f"Alpaca {kind} · {describe() if describe else ''}".strip(" ·")

    def status(self) -> dict[str, Any]:
        now = self.clock.now()
        return {
            "market_time": now.isoformat(),
            "market_open": is_rth(now),
            "speed": self.speed,
            "mode": f"{self.s.market_data}/{self.s.broker}",
            "broker": self.broker_label(),
            "live_money": self.s.broker == "alpaca" and not self.s.alpaca_paper,
            "running": self.running,
            "threads": [t.name for t in threading.enumerate() if t.name.startswith("APScheduler")],
            "jobs": {k: asdict(v) for k, v in self.jobs.items()},
            "errors": sum(v.errors for v in self.jobs.values()),
            "redis": self.redis.status() if self.redis is not None else None,
            "storage_error": self.engine.storage_error,
        }


def _describe(e: BaseException) -> str:
    try:
        text = str(e)
    except Exception:  # an exception whose __str__ itself fails escaped the guard before
        text = "<unprintable message>"
    # a lone surrogate (a file name from os.listdir) could not be stored as UTF-8: the notification was lost
    return f"{type(e).__name__}: {text}".encode("utf-8", "backslashreplace").decode("utf-8")


def scheduler_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if "APScheduler" in t.name]


# ================================================================ one runtime per database per process
_RUNTIMES: dict[str, Runtime] = {}
_REGISTRY_LOCK = threading.Lock()


def _key(db_path: str) -> str:
    return db_path if db_path == ":memory:" else str(Path(db_path).resolve())


def shared_runtime(settings: Settings) -> Runtime:
    """The process's runtime for ``settings.db_path``: created and started once, then reused.

    Raises ``EngineLockedError`` when another process owns the database.
    """
    with _REGISTRY_LOCK:
        rt = _RUNTIMES.get(_key(settings.db_path))
        if rt is not None and not rt._stopped:
            return rt
        rt = Runtime(settings)
        if settings.engine_jobs:
            rt.start()
        _RUNTIMES[_key(settings.db_path)] = rt
        return rt


def active_runtime(db_path: str) -> Runtime | None:
    rt = _RUNTIMES.get(_key(db_path))
    return rt if rt is not None and not rt._stopped else None


def stop_all() -> None:
    with _REGISTRY_LOCK:
        for rt in list(_RUNTIMES.values()):
            rt.stop()
        _RUNTIMES.clear()

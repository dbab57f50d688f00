"""A live Alpaca paper session with injected faults (issue 28), driven through the real ``Runtime`` and the real
alpaca-py clients against the Alpaca-shaped server on 127.0.0.1 (``tests/fakes/alpaca_server.py``), on a clock the
driver moves: what ``tests/test_session_replay_alpaca.py`` replays and ``bench/session_replay_screen.py`` shows.

The faults, in order: the first order fills with extra slippage, the second fills in two parts, the third is
rejected (buying power); an order placed at the broker outside the engine (a market buy); a bar revised by the
vendor after live received it; a 60-second outage (every request answered 503). Fixed dates, seed and clock; nothing
waits on wall time."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from core.clock import NY, UTC, SimClock, previous_session
from core.config import Settings, load_settings
from core.runtime import Runtime
from core.state.store import Store
from core.venues.sim.bar_files import ReplayMarket
from core.venues.sim.synthetic import SyntheticMarket
from tests.fakes.alpaca_server import FakeAlpaca

DAY = date(2025, 3, 5)  # a Wednesday
AFTER = date(2025, 3, 6)  # the next session: DAY is complete (its history may be cached)
SEED = 2
KEY, SECRET = "PKREPLAY0123456789", "SECRETREPLAY9876543210"
TICK_S = 30
SLIP_BPS = 25.0  # the slipped fill: a quarter of a percent worse than the fill model's 2 bps
OUTAGE = ((10, 42), (10, 43))  # New York times: the broker down for 60 market seconds
OUTSIDE_AT = (10, 25)
REVISE_AT, REVISED_BAR = (10, 15), (10, 13)  # at 10:15 the vendor revises the 10:13 bar live received at 10:14


def ny(hh: int, mm: int, ss: int = 0, day: date = DAY) -> datetime:
    return datetime(day.year, day.month, day.day, hh, mm, ss, tzinfo=NY).astimezone(UTC)


def wire_market(seed: int, day: date = DAY, sessions_before: int = 5) -> ReplayMarket:
    """The synthetic market's bars as they cross Alpaca's wire (prices to 4 decimals, whole volumes), so the
    server's own matching and the bars the engine receives are the same numbers."""
    first = day
    for _ in range(sessions_before):
        first = previous_session(first)
    frame = SyntheticMarket(seed, anchor=first).frame_for_sessions(sessions_before + 1)
    for c in ("open", "high", "low", "close"):
        frame[c] = frame[c].round(4)
    frame["volume"] = np.floor(frame["volume"].to_numpy(dtype=float))
    return ReplayMarket(frame)


@dataclass
class Faults:
    """What was injected, as the test needs to check each is found."""

    slipped: str | None = None  # client order id
    partial: str | None = None
    rejected: str | None = None
    outside: tuple[str, str] | None = None  # (symbol, client order id)
    revised: tuple[str, datetime] | None = None  # (symbol, bar open)
    outage: tuple[datetime, datetime] = (ny(*OUTAGE[0]), ny(*OUTAGE[1]))
    symbols: dict[str, str] = field(default_factory=dict)  # client order id -> symbol


@dataclass
class FaultSession:
    db: str
    cache_dir: str
    settings: Settings
    fake: FakeAlpaca
    faults: Faults

    def history_settings(self) -> Settings:
        """What the app's own settings would be where the replay runs: keys, the server and the bar cache."""
        return self.settings

    def replay(self, **kw: Any) -> Any:
        from core.research.session_replay import replay_session

        self.fake.set_time(ny(16, 30))  # the day is over at the server: its history is whole
        live = Store(self.db, readonly=True)
        try:
            return replay_session(live, DAY, history=self.history_settings(), today=AFTER, **kw)
        finally:
            live.close()


def settings_for(workdir: Path, url: str, **kw: Any) -> Settings:
    base: dict[str, Any] = {
        "db_path": str(workdir / "live.db"), "engine_jobs": False, "seed": SEED, "auto_mode": True,
        "cutoff_delta": -0.05, "broker": "alpaca", "market_data": "alpaca", "alpaca_api_key": KEY,
        "alpaca_secret_key": SECRET, "alpaca_base_url": url, "alpaca_data_url": url, "alpaca_timeout_s": 2.0,
        "alpaca_max_retries": 0,  # an outage fails the tick at once: no backoff sleeps on the wall clock
        "alpaca_bar_grace_s": 0,
        "alpaca_cache_dir": str(workdir / "cache"),
        # small positions and room for ten: a fault on one symbol leaves the others' entries as they were, so each
        # fault's differences stay on its own symbol (and the account's equity)
        "risk_per_trade": 0.002, "max_positions": 10,
    }
    base.update(kw)
    return load_settings(_env_file=None, **base)


def _pick(candidates: tuple[str, ...], taken: set[str]) -> str:
    return next(s for s in candidates if s not in taken)


HHMM = tuple[int, int]


def run_fault_session(workdir: Path, *, until: HHMM = (11, 0), seed: int = SEED, late: tuple[HHMM, HHMM] | None = None,
                      down: tuple[HHMM, HHMM] | None = None, **overrides: Any) -> FaultSession:
    """Trade DAY from 9:31 to ``until`` with the faults; the server is left running for the replay's history (the
    caller stops ``fake``). ``late``: no tick in that span (the process was busy: timing); ``down``: the engine
    stopped at the first time and started again, a new process, at the second (restart)."""
    market = wire_market(seed)
    fake = FakeAlpaca(market, universe_symbols=list(market.symbols), api_key=KEY, secret_key=SECRET,
                      rate_limit_per_min=1_000_000).start()
    faults = Faults()
    try:
        settings = settings_for(workdir, fake.url, seed=seed, **overrides)
        clock = SimClock(ny(9, 31))
        fake.set_time(clock.now())
        rt: Runtime | None = Runtime(settings, today=AFTER, clock=clock, wall=lambda: clock.now().timestamp())
        fake.inject("slippage", bps=SLIP_BPS)  # the first order the engine sends
        fake.outage(*faults.outage)
        end = ny(*until)
        seen = 0
        while clock.now() < end:
            now = clock.now()
            fake.set_time(now)
            if late is not None and ny(*late[0]) <= now < ny(*late[1]):
                clock.advance(TICK_S)
                continue
            if down is not None and ny(*down[0]) <= now < ny(*down[1]):
                if rt is not None:
                    rt.stop()
                    rt = None
                clock.advance(TICK_S)
                continue
            if rt is None:
                rt = Runtime(settings, today=AFTER, clock=clock, wall=lambda: clock.now().timestamp())
            rt.run_tick()
            if (now - ny(9, 30)).total_seconds() % 300 == 30:
                rt.run_stop_checks()
            seen = _follow_orders(rt, fake, faults, seen)
            held = {r["symbol"] for r in rt.store.query("SELECT symbol FROM positions")}
            if faults.outside is None and now >= ny(*OUTSIDE_AT):
                sym = _pick(("AMD", "AVGO", "GOOGL", "META", "AMZN", "MSFT"), held | set(faults.symbols.values()))
                oid = fake.add_foreign_order(sym, "buy", 25, type="market")
                faults.outside = (sym, fake.sim_store.scalar("SELECT client_order_id FROM sim_orders WHERE id=?",
                                                             (oid,)))
            if faults.revised is None and now >= ny(*REVISE_AT):
                taken = held | set(faults.symbols.values()) | {faults.outside[0] if faults.outside else ""}
                sym = _pick(("TSLA", "AAPL", "NVDA", "MSFT", "AMZN", "META"), taken)
                bar = ny(*REVISED_BAR)
                row = market.bars([sym], bar, bar + timedelta(minutes=1)).iloc[0]
                close = round(float(row["close"]) * 1.03, 4)  # a bad print corrected three percent up
                fake.revise_bar(sym, bar, close=close, high=max(float(row["high"]), close))
                faults.revised = (sym, bar)
            clock.advance(TICK_S)
        if rt is not None:
            rt.stop()  # the live bars held in memory are written to the bar cache here
    except BaseException:
        fake.stop()
        raise
    return FaultSession(settings.db_path, settings.alpaca_cache_dir, settings, fake, faults)


def _follow_orders(rt: Runtime, fake: FakeAlpaca, faults: Faults, seen: int) -> int:
    """Name the orders the queued faults hit, and queue the next fault once the previous one has been used."""
    rows = rt.store.query("SELECT client_order_id, symbol, status FROM orders WHERE intent_id IS NOT NULL "
                          "ORDER BY submitted_at, client_order_id")
    for r in rows[seen:]:
        if faults.slipped is None:
            faults.slipped = r["client_order_id"]
            fake.inject("partial_fill", seconds=90)  # the next order: half reported at first, the rest 90 s later
        elif faults.partial is None:
            faults.partial = r["client_order_id"]
            fake.inject("reject_buying_power")  # the next order is refused
        elif faults.rejected is None and r["status"] == "rejected":
            faults.rejected = r["client_order_id"]
        else:
            continue
        faults.symbols[r["client_order_id"]] = r["symbol"]
    return len(rows)

"""A year of history must not slow a live tick (issue 15).

A database holding a year's journal (tests/bigdb.py: ~886k decisions, a year of equity, token stats, trades,
notifications, orders, LLM calls) is opened by the app's runtime, which then runs eight market minutes of the
next session: its tick job every 5 s with an actionable signal, its order and fill, bracket legs of the
replay's positions, LLM-gate events and EDGAR look-ups, and the session, stop-check and KPI jobs. Every SQL
statement is recorded (the trace gives it with its parameters): no query plan may read a large table whole.
The work of a quiet tick is counted, not timed: it runs the same few statements on an empty database as on
the year's, and the same number of SQLite virtual-machine instructions on the replayed two weeks alone as
after a year of history before them. Timings are in bench/live_tick_bench.py.
"""
from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest

from core import views
from core.clock import SimClock
from core.metrics import kpi
from core.runtime import Runtime
from core.state.store import Store
from tests.bigdb import YearDb, build_year_db, continue_market, free_symbol, live_settings
from tests.fakes.strategies import BullishSpike

# tables that grow with history: reading one whole is what a tick must never do
LARGE = frozenset({"signals", "signal_counts", "equity", "trades", "token_stats", "notifications", "fills", "orders",
                   "intents", "param_audit", "llm_calls", "kpi_snapshots", "events", "protections", "sim_orders",
                   "sim_fills"})
TICK_S = 5  # the runtime's tick job: every 5 s of market time
TICKS = 96  # eight market minutes: two stop checks, eight session-event runs
# 10 of them mark the bracket legs of the five positions the year's database holds (one per open leg, whatever the
# history: the shapes compared below count a run of them once)
QUIET_MAX_STATEMENTS = 52


@dataclass
class Call:
    job: str
    now: datetime
    sql: list[str]
    steps: int  # SQLite virtual-machine instructions
    report: Any = None
    stop_check: bool = False
    per: list[int] = field(default_factory=list)  # steps of each statement

    @property
    def quiet(self) -> bool:
        r = self.report
        return (self.job == "tick" and not self.stop_check and r is not None and not r.fills and not r.intents
                and not r.commands and r.broker_error is None and r.storage_error is None)


@dataclass
class Session:
    startup: Call
    calls: list[Call] = field(default_factory=list)

    def ticks(self) -> dict[datetime, Call]:
        return {c.now: c for c in self.calls if c.job == "tick"}


class Recorder:
    """Every statement a connection runs (expanded with its parameters) and its VM instruction count."""

    def __init__(self, every: int = 1) -> None:
        self.sql: list[str] = []
        self.marks: list[int] = []
        self.steps = 0
        self.every = every  # count in units of this many instructions (a statement's remainder is not counted)

    def attach(self, conn: sqlite3.Connection) -> None:
        conn.set_trace_callback(self._statement)
        conn.set_progress_handler(self._step, self.every)

    def _statement(self, sql: str) -> None:
        self.sql.append(sql)
        self.marks.append(self.steps)

    def _step(self) -> int:
        self.steps += self.every
        return 0

    def take(self, job: str, now: datetime, **kw: Any) -> Call:
        """What was recorded since the last ``take``; a statement's steps run until the next one starts."""
        ends = self.marks[1:] + [self.steps] if self.marks else []
        call = Call(job, now, self.sql, self.steps, per=[b - a for a, b in zip(self.marks, ends, strict=True)], **kw)
        self.sql, self.steps, self.marks = [], 0, []
        return call


def run_live(path: str, start: datetime, symbol: str, ticks: int = TICKS) -> Session:
    """The app's runtime on ``path`` (built as ``Runtime`` does at start), then ``ticks`` ticks of its jobs."""
    rec = Recorder()
    real_connect = sqlite3.connect

    def connect(*a: Any, **kw: Any) -> sqlite3.Connection:
        conn = real_connect(*a, **kw)
        rec.attach(conn)
        return conn

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(BullishSpike, "symbol", symbol)
        mp.setattr(sqlite3, "connect", connect)
        rt = Runtime(live_settings(path))
        mp.setattr(sqlite3, "connect", real_connect)
        session = Session(rec.take("startup", start))
        try:
            rt.clock = SimClock(start)
            for i in range(ticks):
                now = start + timedelta(seconds=TICK_S * i)
                rt.clock.set(now)
                before = rt.engine.state.last_stop_check
                rep = rt.run_tick()
                session.calls.append(rec.take("tick", now, report=rep,
                                              stop_check=rt.engine.state.last_stop_check != before))
                if i % (60 // TICK_S) == 0:
                    rt.run_session_events()
                    session.calls.append(rec.take("session_events", now))
                if i % (300 // TICK_S) == 0:
                    rt.run_stop_checks()
                    session.calls.append(rec.take("stop_checks", now))
            rt.run_kpi_snapshot()
            session.calls.append(rec.take("kpi_snapshot", now))
        finally:
            rt.stop()
    return session


# ---------------------------------------------------------------- query plans
_VERBS = ("SELECT", "UPDATE", "DELETE", "WITH", "INSERT", "REPLACE")
# a whole table or index read in order (SCAN), or a min/max walk that may read all of it ("SEARCH t" alone)
_SCAN = re.compile(r"^(?:SCAN (\w+)|SEARCH (\w+)$)")


def _table(name: str, sql: str) -> str:
    """The table a plan step names, through its alias in ``sql`` (``FROM signals s`` -> ``SCAN s``)."""
    m = re.search(rf"\b(?:FROM|JOIN)\s+(\w+)\s+(?:AS\s+)?{name}\b", sql, re.IGNORECASE)
    return m.group(1) if m and name not in LARGE else name


def scans(conn: sqlite3.Connection, sql: str) -> list[str]:
    """The plan steps of ``sql`` that read a large table (or all of one of its indexes) from end to end."""
    if not sql.lstrip().upper().startswith(_VERBS):
        return []
    try:
        plan = conn.execute("EXPLAIN QUERY PLAN " + sql).fetchall()
    except sqlite3.Error:
        return []
    return [row[3] for row in plan if (m := _SCAN.match(row[3])) and _table(m.group(1) or m.group(2), sql) in LARGE]


def _shape(sql: str) -> str:
    """A statement without its literals: one entry per distinct query."""
    return re.sub(r"'(?:[^']|'')*'|-?\b\d+(?:\.\d+)?(?:e-?\d+)?\b", "?", sql)


def _shapes(sql: list[str]) -> list[str]:
    """The shapes of a tick's statements, a run of the same shape counted once: the simulated broker marks each open
    bracket leg (one UPDATE per leg), and how many positions are open differs between the databases, not with the
    length of their history."""
    out: list[str] = []
    for shape in map(_shape, sql):
        if not out or out[-1] != shape:
            out.append(shape)
    return out


def scanning(path: str, statements: list[str]) -> dict[str, list[str]]:
    """Distinct statements (by shape) whose plan scans a large table -> the scanning plan steps."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        out: dict[str, list[str]] = {}
        seen: set[str] = set()
        for sql in statements:
            shape = _shape(sql)
            if shape in seen:
                continue
            seen.add(shape)
            if found := scans(conn, sql):
                out[shape] = found
        return out
    finally:
        conn.close()


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def year_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[YearDb]:
    d = tmp_path_factory.mktemp("bigdb")
    yield build_year_db(str(d / "year.db"), base=str(d / "weeks.db"))
    for f in d.iterdir():  # 300 MB: not left behind in pytest's kept temporary directories
        f.unlink()


@dataclass
class Runs:
    """The same live minutes (same market, strategy and settings) on three databases: an empty one, the replayed
    two weeks alone, and those two weeks after a year of history."""

    empty: Session
    weeks: Session
    year: Session


@pytest.fixture(scope="session")
def runs(year_db: YearDb, tmp_path_factory: pytest.TempPathFactory) -> Runs:
    assert year_db.base is not None
    symbol = free_symbol(year_db.path)
    empty = str(tmp_path_factory.mktemp("emptydb") / "empty.db")
    continue_market(empty, year_db.live_start)
    return Runs(*(run_live(db, year_db.live_start, symbol) for db in (empty, year_db.base, year_db.path)))


# ---------------------------------------------------------------- tests
def test_the_database_holds_a_year_of_history(year_db: YearDb):
    c = year_db.counts
    assert c["signals"] >= 850_000
    assert c["equity"] >= 90_000 and c["token_stats"] >= 180_000 and c["trades"] >= 3_000
    assert c["notifications"] >= 5_000 and c["orders"] >= 5_000 and c["llm_calls"] >= 10_000
    assert c["day_state"] >= 250


def test_the_live_minutes_trade_on_every_database(runs: Runs):
    """The traced ticks cover the busy paths too: an actionable signal with its intent and order, fills."""
    for session in (runs.empty, runs.weeks, runs.year):
        reps = [c.report for c in session.calls if c.job == "tick"]
        assert sum(r.actionable for r in reps) >= 1 and sum(len(r.intents) for r in reps) >= 1
        assert sum(r.fills for r in reps) >= 1
        assert not any(r.broker_error or r.storage_error for r in reps)
        assert sum(c.quiet for c in session.calls) >= TICKS // 2


def test_no_live_statement_reads_a_large_table_whole(year_db: YearDb, runs: Runs):
    found = scanning(year_db.path, [s for c in runs.year.calls for s in c.sql])
    assert not found, "full scans in live jobs:\n" + "\n".join(f"{v}: {k[:300]}" for k, v in found.items())


def test_engine_start_up_reads_no_large_table_whole(year_db: YearDb, runs: Runs):
    found = scanning(year_db.path, runs.year.startup.sql)
    # in memory by design, loaded whole: the simulated broker's book, every order and fill (core/venues/sim/broker.py),
    # and the protections' firings, a few a month (core.rules.protections.Protections)
    found = {k: v for k, v in found.items()
             if not all(t.startswith(("SCAN sim_orders", "SCAN sim_fills", "SCAN protections")) for t in v)}
    assert not found, "full scans at start-up:\n" + "\n".join(f"{v}: {k[:300]}" for k, v in found.items())


def _quiet_in_all(*sessions: Session) -> list[tuple[Call, ...]]:
    ticks = [s.ticks() for s in sessions]
    return [tuple(t[now] for t in ticks) for now in ticks[0] if all(now in t and t[now].quiet for t in ticks)]


def test_a_quiet_tick_runs_the_same_few_statements_on_an_empty_and_a_year_database(runs: Runs):
    quiet = _quiet_in_all(runs.empty, runs.year)
    assert len(quiet) >= TICKS // 2
    for empty, year in quiet:
        assert len(year.sql) <= QUIET_MAX_STATEMENTS, year.now
        assert _shapes(year.sql) == _shapes(empty.sql), year.now


def test_a_year_of_history_adds_no_work_to_a_quiet_tick(runs: Runs):
    """SQLite's virtual-machine instructions, counted: a tick reads the recent rows it needs (this month's LLM
    spend, the day's counters), so it does the same work on the two weeks alone and after a year of history."""
    quiet = _quiet_in_all(runs.weeks, runs.year)
    assert len(quiet) >= TICKS // 2
    for weeks, year in quiet:
        assert _shapes(year.sql) == _shapes(weeks.sql), year.now
        assert year.steps <= weeks.steps * 1.01 + 20, (year.now, weeks.steps, year.steps, [
            (w, y, sql[:200]) for w, y, sql in zip(weeks.per, year.per, year.sql, strict=True) if w != y])
    # and every other job of those minutes, busy ticks included
    for job in ("session_events", "stop_checks", "kpi_snapshot"):
        w = sum(c.steps for c in runs.weeks.calls if c.job == job)
        y = sum(c.steps for c in runs.year.calls if c.job == job)
        assert y <= w * 1.01 + 20 * len(runs.year.calls), (job, w, y)


PAGES: dict[str, Callable[[Store, Any, datetime], Any]] = {
    "live_signals": lambda st, s, now: (views.signal_totals(st), views.latest_by_ticker(st),
                                        views.decision_stream(st, 200), views.suppression_counts(st),
                                        views.notifications(st, 8), views.events(st, 30), views.llm_calls(st, 30)),
    "approvals": lambda st, s, now: (views.live_params(st), views.pending_intents(st, now, now.timestamp(), 60.0),
                                     views.recent_decisions(st, 20)),
    "baskets": lambda st, s, now: views.basket_health(st, s, now),
    "risk": lambda st, s, now: (views.risk_gauges(st, s, now), views.token_usage(st, 60), views.protections(st, now)),
    # what pages/history.py reads on a refresh (the CSV is built only when its button is clicked)
    "history": lambda st, s, now: (views.trade_summary(st), views.trades_page(st), views.equity_curve_sampled(st),
                                   views.positions(st), views.orders_page(st), views.fills_page(st),
                                   [views.row_count(st, t) for t in ("trades", "orders", "fills")]),
    "kpis": lambda st, s, now: [kpi.kpi_report(st, s, *views.kpi_window(w, now)) for w in views.KPI_WINDOWS]
    + [views.kpi_snapshots(st)],
    "sidebar": lambda st, s, now: (views.live_params(st), views.heartbeat(st), views.runtime_heartbeat(st),
                                   views.pending_count(st), views.pending_intents(st, now, now.timestamp(), 60.0)),
}


# What the pages read whole on every refresh, found by the test below; reported, not fixed: no index helps a
# whole-history figure (fixing them means keeping running totals, or asking for a window instead).
KNOWN_PAGE_READS = {
    "SELECT decision, COUNT(*) AS n FROM signals GROUP BY decision": "live signals: all-time totals",
    "SELECT reason, COUNT(*) AS n FROM signals WHERE decision=? GROUP BY reason": "live signals: all-time "
    "suppression chart",
    # the same two figures from the summary form of the log (empty on a live database, a research run's otherwise)
    "SELECT decision, SUM(n) AS n FROM signal_counts GROUP BY decision": "live signals: all-time totals (counts)",
    "SELECT reason, SUM(n) AS n FROM signal_counts WHERE decision=? GROUP BY reason": "live signals: all-time "
    "suppression chart (counts)",
    "SELECT pnl, mae, mfe, exit_reason FROM trades ORDER BY id": "risk: whole-history trade KPIs",
    "SELECT ts, equity FROM equity WHERE ts > ? AND ts <= ? ORDER BY ts": "risk: whole-history equity "
    "KPIs (kpi.summary; the KPI page's windows read only theirs)",
    # Trade history (issue 17): aggregated in SQL, a few rows come back however long the history
    "SELECT COUNT(*), COALESCE(SUM(pnl)": "history: closed trades, P&L, win rate, profit factor",
    "SELECT MAX(CASE WHEN peak > ? THEN (peak - equity) / peak": "history: max drawdown of the whole curve",
    "\n        WITH b AS (SELECT ts, equity, (ROW_NUMBER()": "history: the equity curve, at most 5,000 samples",
    # not whole: the two weeks hold fewer trades than a page, the year a full page (LIMIT 500) and no more
    "\n        SELECT id, symbol, kind, qty, entry_ts": "history: one page of closed trades",
    # SQLite keeps no row count: COUNT(*) walks the smallest index's pages (a few ms for 200k rows)
    **{f"SELECT COUNT(*) FROM {t}": "history: the row counts that page the tables and thin the curve"
       for t in ("trades", "orders", "fills", "equity")},
    # not growing much (a few firings a month), but read whole: SQLite prefers the fired_at order to an index
    # on until (core.rules.protections.active_protections)
    "SELECT * FROM protections WHERE released_at IS NULL AND until > ? ORDER BY fired_at": "risk: active protections",
}


def page_reads(path: str, settings: Any, now: datetime) -> dict[tuple[str, str], tuple[str, int]]:
    """(page, statement shape) -> (a statement, VM steps of them all), on a read-only connection as the pages
    open it."""
    out: dict[tuple[str, str], tuple[str, int]] = {}
    for page, show in PAGES.items():
        rec = Recorder(every=100)  # whole-history reads run to millions of instructions
        store = Store(path, readonly=True)
        rec.attach(store.conn)
        try:
            show(store, settings, now)
        finally:
            store.close()
        call = rec.take(page, now)
        for sql, steps in zip(call.sql, call.per, strict=True):
            key = (page, _shape(sql))
            out[key] = (sql, out.get(key, (sql, 0))[1] + steps)
    return out


def test_page_queries_on_a_year_database(year_db: YearDb, runs: Runs):
    """What the pages read on every refresh, on the two weeks alone and after a year of history: a read whose
    work grows with the history must be a known whole-history figure (KNOWN_PAGE_READS), and no page query may
    scan a large table for want of an index (a scan that stops at its LIMIT grows with nothing and is fine)."""
    assert year_db.base is not None
    now = max(runs.year.ticks())
    settings = live_settings(year_db.path)
    weeks, year = page_reads(year_db.base, settings, now), page_reads(year_db.path, settings, now)
    assert weeks.keys() == year.keys()
    grows = {key: f"{key[0]}: {weeks[key][1]} -> {steps} steps" for key, (_, steps) in year.items()
             if steps > 3 * weeks[key][1] + 1000}
    unknown = {key[1]: v for key, v in grows.items() if not key[1].startswith(tuple(KNOWN_PAGE_READS))}
    assert not unknown, "page reads growing with history:\n" + "\n".join(f"{v}: {k[:300]}"
                                                                         for k, v in unknown.items())
    # no scan of a large table for want of an index: every scan left is a known read or stops at its LIMIT
    found = scanning(year_db.path, [sql for key, (sql, _) in year.items() if key not in grows])
    unindexed = {shape: v for shape, v in found.items()
                 if not re.search(r"\bLIMIT\b", shape) and not shape.startswith(tuple(KNOWN_PAGE_READS))}
    assert not unindexed, "page scans:\n" + "\n".join(f"{v}: {k[:300]}" for k, v in unindexed.items())

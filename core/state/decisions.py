"""The decision log: where every ticker decision of a tick is journaled.

Two forms, one writer:

* ``full`` (live trading, and research runs that ask for it): one row per decision in
  ``signals``, as the Live-signals page shows them.
* ``summary`` (research runs by default): decisions that never got past the cutoff
  (``below_cutoff``, ``rate_limited``, ``no_data``) are stored as counts per
  (symbol, minute, decision, reason) in ``signal_counts``; everything that passed the
  cutoff (actionable, or suppressed by a later gate) keeps its full row. Those bulk
  rows are 90 % of a replay's decisions and say nothing a KPI needs beyond their
  count, their price and the last score (see ``core.metrics.kpi``).

In batch mode (a replay) rows wait in memory and are written by ``Store.flush`` in
the batch's transaction; an actionable row writes the waiting rows first, in order,
because the protections read the actionable decisions back from SQLite.

Readers that count or aggregate decisions read both forms through ``rows_sql`` and ``decision_counts`` below,
so every figure (research stats and metrics, KPIs, the reason chart) is the same from either form.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from core.state.store import Store

FULL, SUMMARY = "full", "summary"
MODES = (FULL, SUMMARY)
# decisions that never passed the cutoff: what the summary form stores as counts
COUNTED = frozenset({"below_cutoff", "rate_limited", "no_data"})

SIGNAL_INSERT = ("INSERT OR IGNORE INTO signals(ts, bar_ts, symbol, tier, score, raw_score, vol_spike, cutoff,"
                 " decision, reason, action, price) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)")
# a bucket split by a batch boundary (or a resumed run) adds up instead of being replaced
COUNT_UPSERT = (
    "INSERT INTO signal_counts(symbol, minute, decision, reason, tier, n, first_ts, last_ts, bar_ts, price,"
    " last_score) VALUES (?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(symbol, minute, decision, reason) DO UPDATE SET"
    " n = n + excluded.n, first_ts = MIN(first_ts, excluded.first_ts), last_ts = MAX(last_ts, excluded.last_ts),"
    " bar_ts = excluded.bar_ts, price = COALESCE(excluded.price, price),"
    " last_score = COALESCE(excluded.last_score, last_score)")

SIGNAL_COLUMNS = ("ts", "bar_ts", "symbol", "tier", "score", "raw_score", "vol_spike", "cutoff", "decision", "reason",
                  "action", "price")
# signal row tuple positions (core.engine.signal_row)
_TS, _BAR_TS, _SYM, _TIER, _SCORE, _DECISION, _REASON, _PRICE = 0, 1, 2, 3, 4, 8, 9, 11


_minute_memo: tuple[str, str] = ("", "")


def minute_of(ts_iso: str) -> str:
    """The minute bucket of an ISO timestamp, as ISO (UTC): ``2025-03-03T14:31:30+00:00`` -> ``...14:31:00+00:00``."""
    global _minute_memo
    memo = _minute_memo
    if ts_iso == memo[0]:  # the rows of one tick share their timestamp
        return memo[1]
    m = datetime.fromisoformat(ts_iso).replace(second=0, microsecond=0).isoformat()
    _minute_memo = (ts_iso, m)
    return m


class DecisionLog:
    """Collects a tick's decision rows and writes them in the store's transaction (see the module doc)."""

    def __init__(self, store: Store, mode: str = FULL) -> None:
        if mode not in MODES:
            raise ValueError(f"decisions must be one of {', '.join(MODES)}, not {mode!r}")
        self.store = store
        self.mode = mode
        self.rows: list[tuple[Any, ...]] = []  # full rows waiting for the batch's flush, in decision order
        # (symbol, minute, decision, reason) -> [tier, n, first_ts, last_ts, bar_ts, price, last_score]
        self.counts: dict[tuple[str, str, str, str], list[Any]] = {}
        store.on_flush(self.write)
        store.on_rollback(self.clear)

    def add(self, row: tuple[Any, ...]) -> None:
        """One decision (a ``signal_row`` tuple)."""
        if self.mode == SUMMARY and row[_REASON] in COUNTED:
            self.count(row[_SYM], row[_TIER], row[_DECISION], row[_REASON], row[_TS], row[_BAR_TS], row[_PRICE],
                       row[_SCORE], 1)
            return
        if row[_DECISION] == "actionable":  # written at once, and told to the protections' windows (Store.watch)
            self.write_rows()  # the rows before it first, in order
            if self.store.execute(SIGNAL_INSERT, row).rowcount > 0:
                self.store.wrote("signals", SIGNAL_COLUMNS, (row,))
            return
        if not self.store.batched:
            self.store.execute(SIGNAL_INSERT, row)
            return
        self.rows.append(row)

    def count(self, symbol: str, tier: str, decision: str, reason: str, first_ts: str, bar_ts: str | None,
              price: float | None, score: float | None, n: int, last_ts: str | None = None,
              minute: str | None = None) -> None:
        """``n`` decisions of one symbol in one minute with one reason (summary form); ``first_ts``..``last_ts``
        their first and last tick, ``price`` and ``score`` those of the last one."""
        key = (symbol, minute or minute_of(first_ts), decision, reason)
        last_ts = last_ts or first_ts
        b = self.counts.get(key)
        if b is None:
            self.counts[key] = [tier, n, first_ts, last_ts, bar_ts, price, score]
            if not self.store.batched:
                self.write_counts()
            return
        b[1] += n
        b[3] = last_ts
        b[4] = bar_ts
        if price is not None:
            b[5] = price
        if score is not None:
            b[6] = score
        if not self.store.batched:
            self.write_counts()

    def count_many(self, rows: list[tuple[Any, ...]]) -> None:
        """Summary buckets already made (the research kernel's), in ``COUNT_UPSERT``'s columns and time order. The
        buckets waiting here are older: written first, so a later bucket of a key adds to an earlier one exactly
        as ``count`` merges them (n and the time span add up, the newest bar, price and score win)."""
        if rows:
            self.write_counts()
            self.store.conn.executemany(COUNT_UPSERT, rows)

    def write_rows(self) -> None:
        if self.rows:
            self.store.conn.executemany(SIGNAL_INSERT, self.rows)
            self.rows = []

    def write_counts(self) -> None:
        if self.counts:
            self.store.conn.executemany(COUNT_UPSERT, [
                (sym, minute, decision, reason, tier, n, first, last, bar_ts, price, score)
                for (sym, minute, decision, reason), (tier, n, first, last, bar_ts, price, score)
                in self.counts.items()])
            self.counts = {}

    def write(self) -> None:
        """Everything waiting, in the caller's transaction (``Store.flush``)."""
        self.write_rows()
        self.write_counts()

    def clear(self) -> None:
        self.rows, self.counts = [], {}


# Per symbol of a decision log: its newest decision that was not rate-limited (``last``) and its newest scored
# one. Each walks the (symbol, time) index backwards from the end and stops at the first match, and the symbols
# are found by seeking from one to the next: a restart reads a few rows per symbol, not a year of decisions.
_NEWEST = """
WITH RECURSIVE sym(s) AS (
    SELECT MIN(symbol) FROM {t}
    UNION ALL SELECT (SELECT MIN(symbol) FROM {t} WHERE symbol > s) FROM sym WHERE s IS NOT NULL),
newest AS (
    SELECT s AS symbol,
        (SELECT {time} FROM {t} WHERE symbol = s AND {processed} ORDER BY {order} LIMIT 1) AS last,
        (SELECT rowid FROM {t} WHERE symbol = s AND {score} IS NOT NULL ORDER BY {order} LIMIT 1) AS scored
    FROM sym WHERE s IS NOT NULL)
SELECT n.symbol, n.last, x.{time} AS ts, x.{score} AS score FROM newest n LEFT JOIN {t} x ON x.rowid = n.scored
"""
NEWEST_SIGNALS = _NEWEST.format(t="signals", time="ts", score="score", order="ts DESC",
                                processed="COALESCE(reason, '') != 'rate_limited'")
# a bucket's ticks all fall in its minute: the newest minute holds the newest tick
NEWEST_COUNTS = _NEWEST.format(t="signal_counts", time="last_ts", score="last_score", order="minute DESC, last_ts DESC",
                               processed="reason != 'rate_limited'")


def restore_scheduler_state(store: Store) -> tuple[dict[str, float], dict[str, tuple[float, float]]]:
    """From both forms of the log: when each symbol was last processed (a rate-limited attempt did not process
    it) and its latest score with the time it was taken."""
    last: dict[str, float] = {}
    latest: dict[str, tuple[float, float]] = {}

    def later(d: dict[str, Any], sym: str, t: float, value: Any) -> None:
        old = d.get(sym)
        if old is None or (old if isinstance(old, float) else old[0]) < t:
            d[sym] = value

    for sql in (NEWEST_SIGNALS, NEWEST_COUNTS):
        for r in store.query(sql):
            if r["last"] is not None:
                t = _epoch(r["last"])
                later(last, r["symbol"], t, t)
            if r["ts"] is not None:
                t = _epoch(r["ts"])
                later(latest, r["symbol"], t, (t, r["score"]))
    return last, latest


def _epoch(ts: str) -> float:
    t = datetime.fromisoformat(ts)
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp()


# ================================================================ reading both forms
# The columns of ``rows_sql``: a full row is one decision (n = 1). A summary bucket becomes its first tick
# (n = 1) and, when it counts more, its last tick carrying the rest of the count (n - 1): exact for the
# replay's buckets (30 s ticks: at most two per minute), so any time window counts them like the full rows.
# Both carry the bucket's price (every tick of a bucket sees the same bar) and its last score; cutoff, action,
# raw_score and vol_spike are NULL (those decisions never passed the cutoff, so none is strong).
ROW_COLUMNS = ("id", "ts", "bar_ts", "symbol", "tier", "score", "cutoff", "decision", "reason", "action", "price", "n")
_FULL_ARM = "SELECT id, ts, bar_ts, symbol, tier, score, cutoff, decision, reason, action, price, 1 AS n FROM signals"
_FIRST_ARM = ("SELECT NULL, first_ts, bar_ts, symbol, tier, last_score, NULL, decision, reason, NULL, price, 1 "
              "FROM signal_counts")
_LAST_ARM = ("SELECT NULL, last_ts, bar_ts, symbol, tier, last_score, NULL, decision, reason, NULL, price, n - 1 "
             "FROM signal_counts WHERE n > 1")
BOUNDS = ("(]", "[)", "[]", "()")


def rows_sql(start: str | None = None, end: str | None = None, bounds: str = "(]") -> tuple[str, list[Any]]:
    """``(sql, params)`` of a subquery for a FROM clause: every decision of both forms, columns ``ROW_COLUMNS``,
    with ``ts`` between the ISO times ``start`` and ``end`` (either open when None; ``bounds`` says which ends
    are included, ``(]`` as the KPI windows). Aggregate with ``SUM(n)``, never ``COUNT(*)``."""
    if bounds not in BOUNDS:
        raise ValueError(f"bounds must be one of {BOUNDS}, not {bounds!r}")
    conds: list[str] = []
    params: list[Any] = []
    if start is not None:
        conds.append("ts >= ?" if bounds[0] == "[" else "ts > ?")
        params.append(start)
    if end is not None:
        conds.append("ts <= ?" if bounds[1] == "]" else "ts < ?")
        params.append(end)
    if not conds:
        return f"({_FULL_ARM} UNION ALL {_FIRST_ARM} UNION ALL {_LAST_ARM})", []
    # the window inside each arm; on the buckets also as a range of their minute, for its index
    hint, hint_params = _minute_hint(start, end)
    first_ts, last_ts = (" AND ".join(c.replace("ts", col, 1) for c in conds) for col in ("first_ts", "last_ts"))
    sql = (f"({_FULL_ARM} WHERE {' AND '.join(conds)} UNION ALL {_FIRST_ARM} WHERE {first_ts}{hint} "
           f"UNION ALL {_LAST_ARM} AND {last_ts}{hint})")
    return sql, [*params, *params, *hint_params, *params, *hint_params]


def _minute_hint(start: str | None, end: str | None) -> tuple[str, list[Any]]:
    """A bucket's ticks lie in [minute, minute + 60 s): the minutes that can hold a tick of the window (only
    for UTC bounds, the form the minutes are stored in)."""
    sql, params = "", []
    lo, hi = _utc(start), _utc(end)
    if lo is not None:
        sql += " AND minute > ?"
        params.append((lo - timedelta(seconds=60)).isoformat())
    if hi is not None:
        sql += " AND minute <= ?"
        params.append(end)
    return sql, params


def _utc(ts: str | None) -> datetime | None:
    if not ts:
        return None
    try:
        t = datetime.fromisoformat(ts)
    except ValueError:
        return None
    return t if t.utcoffset() is not None and not t.utcoffset() else None


def decision_counts(store: Store, by: str | Sequence[str] = "decision", where: str = "", params: Sequence[Any] = (),
                    *, start: str | None = None, end: str | None = None, bounds: str = "(]") -> dict[Any, int]:
    """Decisions of both forms counted per ``by`` (a column of ``ROW_COLUMNS``, or several: tuple keys),
    optionally filtered by ``where`` (SQL over those columns) and a ``ts`` window (``rows_sql``). Keys in
    ascending order."""
    cols = [by] if isinstance(by, str) else list(by)
    src, src_params = rows_sql(start, end, bounds)
    keys = ", ".join(cols)
    rows = store.conn.execute(
        f"SELECT {keys}, SUM(n) AS n FROM {src} {'WHERE ' + where if where else ''} GROUP BY {keys} ORDER BY {keys}",
        [*src_params, *params]).fetchall()
    if isinstance(by, str):
        return {r[0]: int(r[-1]) for r in rows}
    return {tuple(r[:-1]): int(r[-1]) for r in rows}


def whole_history_counts(store: Store, by: str, *, decision: str | None = None) -> dict[Any, int]:
    """``decision_counts`` over the whole history, as one aggregate per form added up: the full rows' count is
    answered from an index alone (the union of both forms would read every row)."""
    where, params = (" WHERE decision=?", [decision]) if decision is not None else ("", [])
    out: dict[Any, int] = {}
    for sql in (f"SELECT {by}, COUNT(*) AS n FROM signals{where} GROUP BY {by}",
                f"SELECT {by}, SUM(n) AS n FROM signal_counts{where} GROUP BY {by}"):
        for key, n in store.conn.execute(sql, params).fetchall():
            out[key] = out.get(key, 0) + int(n or 0)
    return dict(sorted(out.items(), key=lambda kv: (kv[0] is None, kv[0] or "")))


def decision_total(store: Store, where: str = "", params: Sequence[Any] = (), *, start: str | None = None,
                   end: str | None = None, bounds: str = "(]") -> int:
    """How many decisions of both forms match ``where`` in the window (see ``decision_counts``)."""
    src, src_params = rows_sql(start, end, bounds)
    n = store.conn.execute(f"SELECT SUM(n) FROM {src} {'WHERE ' + where if where else ''}",
                           [*src_params, *params]).fetchone()[0]
    return int(n or 0)


def first_decision_ts(store: Store) -> str | None:
    """The time of the first decision in either form."""
    return store.scalar("SELECT MIN(ts) FROM (SELECT MIN(ts) AS ts FROM signals UNION ALL "
                        "SELECT MIN(first_ts) FROM signal_counts)")


def any_decision(store: Store, start: str | None = None, end: str | None = None, bounds: str = "(]") -> bool:
    """Whether either form holds a decision in the window."""
    src, params = rows_sql(start, end, bounds)
    return store.scalar(f"SELECT 1 FROM {src} LIMIT 1", params) is not None

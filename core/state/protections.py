"""The ``protections`` table in memory (rules §10): the firings of the protections and the day's loss halt.

Owned by the engine: whether new entries are paused, whether a rule is in its cool-off, when it last fired, whether
the day's loss halt is recorded are answered from here, not from SQLite. Loaded at start (and after a rollback,
which leaves it stale until the next look-up); every change (a firing, the daily-loss halt, a release) is written
through to the table in the caller's transaction, so the journal the UI reads and a restart loads hold the same rows.
What fires is decided by ``core.rules.protections`` (the conditions) and ``core.engine.protect`` (their figures).
"""

from __future__ import annotations

import json
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any

from core.clock import NY, UTC, trading_date
from core.state.store import Store, iso

DAILY_LOSS = "daily_loss"  # the risk limit's daily-loss halt (rules §7), shown as a protection


@dataclass(frozen=True)
class Firing:
    """What a rule's firing decided: the row to record and the parameter changes it wants applied."""

    rule: str
    at: datetime
    why: str
    figures: dict[str, float]
    changes: dict[str, Any]  # parameter -> new value, applied by the engine (``source='protection'``)
    until: datetime
    old: dict[str, Any] = field(default_factory=dict)  # parameter -> value before ``changes``
    pause_until: datetime | None = None  # no new entries until then



def active_protections(store: Store, now: datetime) -> list[dict[str, Any]]:
    """Firings still inside their cool-off or pause and not released by hand, read from the journal (the UI's
    view; the engine asks its ``Protections``)."""
    return store.query("SELECT * FROM protections WHERE released_at IS NULL AND until > ? ORDER BY fired_at",
                       (iso(now),))


class _Series:
    """Rows of one journal table in time order, as far back as ``loaded_from`` (exclusive): every row of the table
    with a later time is here. ``unique``: one row per time (an upsert replaces it), else many."""

    def __init__(self, sql: str, unique: bool, value: Callable[..., Any] | None = None) -> None:
        self.sql = sql  # (time, value...) of the rows with since < time <= until, in the table's order
        self.unique = unique
        self.value = value  # a row's columns after the time -> the value kept (default: the one column, or a tuple)
        self.keys: list[str] = []
        self.values: list[Any] = []
        self.loaded_from: str | None = None  # None: nothing loaded yet (the first question reads the table)

    def reset(self) -> None:
        self.keys, self.values, self.loaded_from = [], [], None

    def cover(self, store: Store, since: str) -> None:
        """Make sure every row later than ``since`` is here: read the older ones from the table once."""
        lo = self.loaded_from
        if lo is not None and since >= lo:
            return
        rows = [tuple(r) for r in store.conn.execute(self.sql, (since, lo if lo is not None else "\uffff"))]
        self.keys[:0] = [r[0] for r in rows]
        if self.value is not None:
            self.values[:0] = [self.value(*r[1:]) for r in rows]
        else:
            self.values[:0] = [r[1] if len(r) == 2 else r[1:] for r in rows]
        self.loaded_from = since

    def add(self, key: str, value: Any) -> None:
        """A row just written. One at or before ``loaded_from`` is left to the table (read if ever needed)."""
        if self.loaded_from is None or key <= self.loaded_from:
            return
        keys = self.keys
        if keys and key > keys[-1]:  # the usual case: the newest row
            keys.append(key)
            self.values.append(value)
            return
        i = bisect_right(keys, key)
        if self.unique and i > 0 and keys[i - 1] == key:
            self.values[i - 1] = value
            return
        keys.insert(i, key)
        self.values.insert(i, value)

    def window(self, since: str, until: str) -> list[Any]:
        """The values of (since, until], in time order (rows of one time in the order they were written)."""
        keys = self.keys
        return self.values[bisect_right(keys, since):bisect_right(keys, until)]

    def forget(self, before: str) -> None:
        """Drop the rows at or before ``before`` (no window reaches them now; a later question that does reads the
        table again)."""
        if self.loaded_from is None or before <= self.loaded_from:
            return
        i = bisect_right(self.keys, before)
        del self.keys[:i], self.values[:i]
        self.loaded_from = before


def _actionable(symbol: str, ts: str, score: float | None) -> tuple[str, float, float]:
    return symbol, datetime.fromisoformat(ts).timestamp(), score or 0.0


TOKEN_TIER = "A"  # the tier whose token overflow a protection watches (core.rules.protections)


class ProtectionWindows:
    """The journal rows the protections' window figures count (rules §10), kept in memory as the engine writes them:
    actionable signals (symbol, score), exits (their reason), Tier-A token counts per minute, equity snapshots.
    ``core.engine.protect.window_figures`` reads its windows from here instead of querying SQLite after every fill.

    Exact, not approximate: each series holds every row of its table later than its ``loaded_from`` (read from the
    table on first use, and again for a window reaching further back), and every write through the store
    (``Store.watch``) or the decision log's actionable rows is added as it happens; a rollback empties them (read
    again on the next question). The engine is the only writer of these tables."""

    def __init__(self, store: Store) -> None:
        self.store = store
        # (symbol, epoch seconds, score): the figures' flip-flop count takes exactly these
        self.actionable = _Series("SELECT ts, symbol, ts, score FROM signals WHERE decision='actionable' AND ts > ? "
                                  "AND ts <= ? ORDER BY ts, id", False, _actionable)
        self.exits = _Series("SELECT exit_ts, exit_reason FROM trades WHERE exit_ts > ? AND exit_ts <= ? "
                             "ORDER BY exit_ts, id", False)
        self.tokens = _Series("SELECT minute, requested, granted FROM token_stats WHERE tier='A' AND minute > ? "
                              "AND minute <= ? ORDER BY minute", True)
        self.equity = _Series("SELECT ts, equity FROM equity WHERE ts > ? AND ts <= ? ORDER BY ts", True)
        store.watch("signals", self._signals)
        store.watch("trades", self._trades)
        store.watch("token_stats", self._tokens)
        store.watch("equity", self._equity)
        store.on_rollback(self.reset)

    def reset(self) -> None:
        for s in (self.actionable, self.exits, self.tokens, self.equity):
            s.reset()

    def _signals(self, cols: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        ts, sym, score, dec = (cols.index(c) for c in ("ts", "symbol", "score", "decision"))
        for r in rows:
            if r[dec] == "actionable":
                self.actionable.add(r[ts], _actionable(r[sym], r[ts], r[score]))

    def _trades(self, cols: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        ts, reason = cols.index("exit_ts"), cols.index("exit_reason")
        for r in rows:
            self.exits.add(r[ts], r[reason])

    def _tokens(self, cols: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        m, tier, req, gr = (cols.index(c) for c in ("minute", "tier", "requested", "granted"))
        for r in rows:
            if r[tier] == TOKEN_TIER:
                self.tokens.add(r[m], (r[req], r[gr]))

    def _equity(self, cols: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        ts, eq = cols.index("ts"), cols.index("equity")
        for r in rows:
            self.equity.add(r[ts], r[eq])

    def rows(self, series: _Series, since: str, until: str) -> list[Any]:
        """``series``' values in (since, until], reading older rows from the table first if the window needs them."""
        series.cover(self.store, since)
        return series.window(since, until)

    def forget(self, before: str, before_minute: str) -> None:
        """Nothing at or before these times is asked for any more (``before_minute``: the token series' key)."""
        self.actionable.forget(before)
        self.exits.forget(before)
        self.equity.forget(before)
        self.tokens.forget(before_minute)


class Protections:
    """The ``protections`` table in memory, owned by the engine: whether new entries are paused, whether a rule
    is in its cool-off, when it last fired, whether the day's loss halt is recorded are answered from here, not
    from SQLite. Loaded at start (and after a rollback, which leaves it stale until the next look-up); every
    change (a firing, the daily-loss halt, a release) is written through to the table in the caller's
    transaction, so the journal the UI reads and a restart loads holds the same rows."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.rows: dict[int, dict[str, Any]] = {}  # every row by id (one per firing: a small table)
        self._stale = False
        self.windows = ProtectionWindows(store)  # what the rules' window figures count, kept as it is written
        store.on_rollback(self._mark_stale)  # whatever rollback it was, the memory follows the journal again
        self.load()

    def load(self) -> None:
        """(Re)build from the table: at start and after a rollback."""
        self.rows = {r["id"]: r for r in self.store.query("SELECT * FROM protections ORDER BY id")}
        self._index()
        self._stale = False
        self.windows.reset()  # read again from the table when next asked

    def _mark_stale(self) -> None:
        self._stale = True

    def _fresh(self) -> None:
        if self._stale:
            self.load()

    def _index(self) -> None:
        self._pause_top: dict[str, Any] | None = None  # the unreleased row pausing entries longest
        self._cooling: dict[str, str] = {}  # rule -> latest ``until`` of its unreleased rows
        self._last: dict[str, str] = {}  # rule -> latest ``fired_at`` of all its rows
        self._halt_until: str | None = None  # latest ``until`` of the daily-loss rows
        for row in self.rows.values():
            self._note(row)

    def _note(self, row: dict[str, Any]) -> None:
        """Take one row (in id order) into the look-ups. Strings compare as SQLite compares them."""
        rule = row["rule"]
        if row["released_at"] is None:
            top = self._pause_top
            if row["pause_until"] is not None and (top is None or row["pause_until"] > top["pause_until"]):
                self._pause_top = row  # on a tie the first row stays, as ORDER BY ... DESC LIMIT 1 returns
            if row["until"] is not None and row["until"] > self._cooling.get(rule, ""):
                self._cooling[rule] = row["until"]
        if row["fired_at"] is not None and row["fired_at"] > self._last.get(rule, ""):
            self._last[rule] = row["fired_at"]
        if rule == DAILY_LOSS and row["until"] is not None and row["until"] > (self._halt_until or ""):
            self._halt_until = row["until"]

    def _add(self, row: dict[str, Any]) -> int:
        """Insert a row (written through) and take it in; returns its id."""
        cols = list(row)
        cur = self.store.execute(f"INSERT INTO protections({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})",
                                 [row[c] for c in cols])
        pid = int(cur.lastrowid or 0)
        full = {"id": pid, **{c: None for c in _COLUMNS}, **row}
        self.rows[pid] = full
        self._note(full)
        return pid

    # ------------------------------------------------------------ look-ups
    def all_rows(self) -> list[dict[str, Any]]:
        """Every firing, oldest first, as the table holds it (a session snapshot's copy)."""
        self._fresh()
        return [dict(r) for _, r in sorted(self.rows.items())]

    def entries_paused_by(self, now: datetime) -> str | None:
        """The rule pausing new entries at ``now`` (stop-loss guard, drawdown), or None."""
        self._fresh()
        top = self._pause_top
        return top["rule"] if top is not None and top["pause_until"] > iso(now) else None

    def cooling_off(self, rule: str, now: datetime) -> bool:
        """``rule`` fired, is not released and its cool-off (or pause) runs past ``now``."""
        self._fresh()
        return self._cooling.get(rule, "") > (iso(now) or "")

    def last_fired(self, rule: str) -> datetime | None:
        """When ``rule`` last fired (released or not), or None."""
        self._fresh()
        last = self._last.get(rule)
        return datetime.fromisoformat(last) if last else None

    def daily_loss_recorded(self, now: datetime) -> bool:
        """The daily-loss halt of ``now``'s New York date is recorded already."""
        self._fresh()
        return self._halt_until is not None and self._halt_until > (iso(now) or "")

    def active(self, now: datetime) -> list[dict[str, Any]]:
        """Firings still inside their cool-off or pause and not released by hand, oldest first."""
        self._fresh()
        t = iso(now) or ""
        live = [r for r in self.rows.values() if r["released_at"] is None and (r["until"] or "") > t]
        return sorted(live, key=lambda r: r["fired_at"])

    # ------------------------------------------------------------ changes (written through)
    def record(self, f: Firing) -> int:
        """A firing: its row, its notification, committed. Returns the row id."""
        self._fresh()
        with self.store.lock:
            pid = self._add({
                "rule": f.rule, "fired_at": iso(f.at), "until": iso(f.until), "pause_until": iso(f.pause_until),
                "why": f.why, "figures_json": json.dumps({k: round(v, 6) for k, v in f.figures.items()}),
                "old_json": json.dumps(f.old), "new_json": json.dumps(f.changes),
            })
            text = f"protection {f.rule} fired: {f.why}"
            if f.changes:
                text += "; " + ", ".join(f"{k} {f.old[k]} -> {v}" for k, v in f.changes.items())
            if f.pause_until is not None:
                text += f"; new entries paused until {f.until.isoformat(timespec='seconds')}"
            self.store.notify("warning", text, f.at)
            self.store.commit()
        return pid

    def record_daily_loss_halt(self, now: datetime, loss: float, limit: float) -> bool:
        """The first entry the daily loss limit refuses on a New York date becomes a ``daily_loss`` protection
        row (visible, notified) that lasts until that date ends. The risk manager itself enforces the halt, so
        this is a record only: one per date, whichever path (a decision, a basket, an approval) meets the
        halt first."""
        if self.daily_loss_recorded(now):
            return False
        day_end = datetime.combine(trading_date(now) + timedelta(days=1), time(0), NY).astimezone(UTC)
        with self.store.lock:
            why = f"loss from start-of-day equity {loss:.2%} >= {limit:.2%}"
            self._add({
                "rule": DAILY_LOSS, "fired_at": iso(now), "until": iso(day_end), "pause_until": None, "why": why,
                "figures_json": json.dumps({"daily_loss": round(loss, 6), "daily_loss_limit": limit}),
                "old_json": "{}", "new_json": "{}",
            })
            self.store.notify("warning", f"protection {DAILY_LOSS} fired: {why}; new entries halted until the day "
                              "rolls", now)
        return True

    def release(self, protection_id: int, *, who: str, now: datetime) -> bool:
        """Manual release (ends the cool-off and any entry pause; parameters stay as they are, audited).
        The daily-loss halt is the risk limit itself and cannot be released by hand (ValueError)."""
        self._fresh()
        row = self.rows.get(protection_id)
        if row is not None and row["rule"] == DAILY_LOSS:
            raise ValueError("the daily loss halt is a risk limit: it lifts when the New York date rolls")
        if row is None or row["released_at"] is not None:
            return False
        store = self.store
        with store.transaction():
            store.execute("UPDATE protections SET released_at=?, released_by=? WHERE id=? AND released_at IS NULL",
                          (iso(now), who, protection_id))
            store.insert("param_audit", {"ts": iso(now), "who": who, "name": f"protection:{row['rule']}",
                                         "old": json.dumps("active"), "new": json.dumps("released"),
                                         "source": "release"})
            store.notify("info", f"protection {row['rule']} released by {who}", now)
        row.update(released_at=iso(now), released_by=who)
        self._index()
        return True


_COLUMNS = ("rule", "fired_at", "until", "pause_until", "why", "figures_json", "old_json", "new_json",
            "released_at", "released_by")


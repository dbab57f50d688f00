"""Clocks and the New York regular session.

Trading logic never reads the wall clock: it receives ``now`` from a ``Clock``.
``WallClock`` is the only place that calls ``datetime.now``; replay uses ``SimClock``.
Session times come from the XNYS calendar of ``exchange_calendars`` (holidays,
early closes and DST are its job, not ours).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, timedelta, timezone
from functools import lru_cache
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import exchange_calendars as xcals
import pandas as pd

NY = ZoneInfo("America/New_York")
UTC = timezone.utc  # noqa: UP017  (re-exported name used across core)


class Clock(Protocol):
    def now(self) -> datetime: ...


class WallClock:
    """Real time, UTC-aware."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class SimClock:
    """A clock the caller moves: replay and tests."""

    def __init__(self, start: datetime) -> None:
        self._now = ensure_utc(start)

    def now(self) -> datetime:
        return self._now

    def set(self, ts: datetime) -> None:
        ts = ensure_utc(ts)
        if ts < self._now:
            raise ValueError(f"SimClock cannot go back in time: {ts} < {self._now}")
        self._now = ts

    def advance(self, seconds: float) -> datetime:
        self._now = self._now + timedelta(seconds=seconds)
        return self._now


def ensure_utc(ts: datetime) -> datetime:
    """Refuse naive datetimes: a naive time is ambiguous (alpaca-py takes it as UTC, people as local)."""
    if ts.tzinfo is None:
        raise ValueError(f"naive datetime {ts!r}: pass a timezone-aware value")
    return ts.astimezone(UTC)


# A fixed span, not the library's default (20 years back to one year ahead of *today*): what the engine accepts
# must not depend on the day it runs, and any date a bar file or a simulation can hold is covered.
CALENDAR_START = date(1990, 1, 2)
CALENDAR_END = date(2035, 12, 31)


@lru_cache(maxsize=1)
def _calendar() -> xcals.ExchangeCalendar:
    return xcals.get_calendar("XNYS", start=CALENDAR_START.isoformat(), end=CALENDAR_END.isoformat())


@lru_cache(maxsize=16384)  # every tick asks for its day's session
def session_bounds(day: date) -> tuple[datetime, datetime] | None:
    """(open, close) of the NYSE regular session on ``day`` in America/New_York, or None."""
    cal = _calendar()
    ts = pd.Timestamp(day)
    if ts < cal.first_session or ts > cal.last_session:
        span = f"{cal.first_session.date()}..{cal.last_session.date()}"
        raise ValueError(f"{day} is outside the exchange calendar ({span})")
    if not cal.is_session(ts):
        return None
    return (
        cal.session_open(ts).to_pydatetime().astimezone(NY),
        cal.session_close(ts).to_pydatetime().astimezone(NY),
    )


_date_memo: tuple[Any, date | None] = (None, None)


def trading_dates(times: Iterable[datetime]) -> list[date]:
    """``trading_date`` of many times (a year of equity snapshots): one conversion per UTC hour, because New York's
    midnight and its DST switches fall on a whole UTC hour."""
    by_hour: dict[int, date] = {}
    out = []
    for t in times:
        if t.tzinfo is None:
            out.append(trading_date(t))  # refused there, as one at a time
            continue
        h = int(t.timestamp()) // 3600
        d = by_hour.get(h)
        if d is None:
            d = by_hour[h] = trading_date(t)
        out.append(d)
    return out


def trading_date(ts: datetime) -> date:
    """The New York calendar date of ``ts``: day keys roll here, not at UTC midnight."""
    global _date_memo
    memo = _date_memo  # the parts of one tick ask about the same ``now`` object
    if ts is memo[0]:
        return memo[1]  # type: ignore[return-value]
    d = ensure_utc(ts).astimezone(NY).date()
    _date_memo = (ts, d)
    return d


def is_rth(ts: datetime) -> bool:
    """True inside the regular session (open inclusive, close exclusive)."""
    bounds = session_bounds(trading_date(ts))
    if bounds is None:
        return False
    return bounds[0] <= ts < bounds[1]


def trading_sessions(start: date, count: int) -> list[date]:
    """The first ``count`` sessions on or after ``start``."""
    cal = _calendar()
    out = cal.sessions_in_range(pd.Timestamp(start), cal.last_session)[:count]
    if len(out) < count:
        raise ValueError(f"only {len(out)} sessions from {start} within the calendar, {count} asked")
    return [d.date() for d in out]


def sessions_between(start: date, end: date) -> list[date]:
    """Sessions in [start, end]."""
    cal = _calendar()
    return [d.date() for d in cal.sessions_in_range(pd.Timestamp(start), pd.Timestamp(end))]


def next_session_on_or_after(day: date) -> date:
    """``day`` if it is a session, else the next one (weekends and holidays move forward)."""
    return _calendar().date_to_session(pd.Timestamp(day), direction="next").date()


def previous_session(day: date) -> date:
    cal = _calendar()
    return cal.date_to_session(pd.Timestamp(day), direction="previous").date() if not cal.is_session(
        pd.Timestamp(day)
    ) else cal.previous_session(pd.Timestamp(day)).date()


def minutes_since_open(ts: datetime) -> float | None:
    bounds = session_bounds(trading_date(ts))
    if bounds is None:
        return None
    return (ts - bounds[0]).total_seconds() / 60.0


def minutes_to_close(ts: datetime) -> float | None:
    bounds = session_bounds(trading_date(ts))
    if bounds is None:
        return None
    return (bounds[1] - ts).total_seconds() / 60.0


def sessions_touched(since: datetime, before: date) -> int:
    """Sessions strictly before ``before`` that were still open at or after ``since`` (a profile switched on
    at 10:00 used that session; one switched on on Saturday has used none yet)."""
    n = 0
    day = trading_date(since)
    while day < before:
        bounds = session_bounds(day)
        if bounds is not None and bounds[1] > since:
            n += 1
        day += timedelta(days=1)
    return n
